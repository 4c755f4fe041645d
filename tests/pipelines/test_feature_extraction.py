"""feature-extraction / sentence-embedding against sentence-transformers: the real all-MiniLM-L6-v2, and
sentence-transformers folders built around a random transformers BertModel for every pooling mode, Dense,
Normalize, max_seq_length, do_lower_case and prompts."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import bertfast
from bertfast.st_config import read_sentence_config

from tests.helpers import HIDDEN_ATOL, SENTENCES, TINY, assert_close, exported, st_folder

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
LONG_TEXT = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # 360+ tokens
TEXTS = [*SENTENCES, LONG_TEXT, "x"]


def check_parity(ours: torch.Tensor, expected: torch.Tensor) -> None:
    """The sentence-transformers bar of the issue: cosine >= 0.99999 and max |diff| <= 1e-5 for every text."""
    assert ours.shape == expected.shape
    assert torch.nn.functional.cosine_similarity(ours, expected).min() >= 0.99999
    assert_close(ours, expected, HIDDEN_ATOL)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, minilm_dir) -> str:
    """A random transformers BertModel over the bert-base-uncased vocabulary, with its tokenizer files."""
    import transformers

    path = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(7)
    transformers.BertModel(transformers.BertConfig(**{**TINY, "vocab_size": 30522})).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(minilm_dir, name), path)
    return str(path)


def st_encode(folder: str, texts, **kwargs) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device="cpu").encode(texts, convert_to_tensor=True, **kwargs).cpu()


def test_all_minilm_matches_sentence_transformers_beyond_its_256_token_limit(minilm_dir):
    embed = bertfast.pipeline("sentence-embedding", model=minilm_dir, batch_size=3)
    assert embed.max_length == 256 and embed.sentence_config.normalize
    assert len(embed.tokenizer(LONG_TEXT)["input_ids"]) > 256
    ours = embed(TEXTS)
    check_parity(ours, st_encode(minilm_dir, TEXTS))
    assert_close(ours.norm(dim=-1), torch.ones(len(TEXTS)), 1e-6)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    torch.testing.assert_close(embed(SENTENCES[0]), ours[0])
    torch.testing.assert_close(bertfast.pipeline("feature-extraction", model=minilm_dir)(TEXTS), ours)


CONVERT_FLAGS = {"numpy": {"convert_to_numpy": True}, "tensor": {"convert_to_tensor": True},
                 "tensor_wins": {"convert_to_numpy": True, "convert_to_tensor": True},
                 "not_numpy": {"convert_to_numpy": False}, "not_tensor": {"convert_to_tensor": False},
                 "neither": {"convert_to_numpy": False, "convert_to_tensor": False}}


def assert_same_output(ours, expected) -> None:
    """The same container as sentence-transformers' (numpy array, tensor, or list of tensors), same dtype, same
    device, values within HIDDEN_ATOL."""
    assert type(ours) is type(expected)
    if isinstance(expected, list):
        assert len(ours) == len(expected)
        for got, want in zip(ours, expected):
            assert_same_output(got, want)
    elif isinstance(expected, np.ndarray):
        assert ours.dtype == expected.dtype == np.float32 and ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=HIDDEN_ATOL, rtol=0)
    else:
        assert ours.dtype == expected.dtype and ours.device == expected.device
        assert_close(ours, expected, HIDDEN_ATOL)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return bertfast.pipeline("sentence-embedding", model=minilm_dir), SentenceTransformer(minilm_dir, device="cpu")


@pytest.mark.parametrize("flags", CONVERT_FLAGS)
def test_convert_flags_return_what_sentence_transformers_returns(minilm, flags):
    embed, model = minilm
    kwargs = CONVERT_FLAGS[flags]
    for inputs in (TEXTS, TEXTS[0]):  # a list: (N, D) or N (D,) tensors; a string: (D,)
        assert_same_output(embed(inputs, **kwargs), model.encode(inputs, **kwargs))
        # token embeddings are a list of (tokens, H) tensors (one for a string) whatever the flags
        expected = model.encode(inputs, output_value="token_embeddings", **kwargs)
        assert_same_output(embed(inputs, pooling="none", normalize=False, **kwargs), expected)


def test_without_convert_flags_embeddings_are_cpu_tensors(minilm):
    embed, model = minilm
    ours = embed(TEXTS)
    assert torch.is_tensor(ours) and ours.shape == (len(TEXTS), 384) and ours.device.type == "cpu"
    np.testing.assert_allclose(ours.numpy(), model.encode(TEXTS), atol=HIDDEN_ATOL, rtol=0)  # its numpy default
    assert torch.is_tensor(embed(TEXTS[0])) and embed(TEXTS[0]).shape == (384,)
    tokens = embed(TEXTS, pooling="none")
    assert isinstance(tokens, list) and all(torch.is_tensor(t) and t.device.type == "cpu" for t in tokens)


def test_explicit_arguments_win_over_the_folder(minilm_dir):
    from sentence_transformers import SentenceTransformer

    embed = bertfast.pipeline("feature-extraction", model=minilm_dir)
    full = SentenceTransformer(minilm_dir, device="cpu")
    without_normalize = SentenceTransformer(modules=[full[0], full[1]], device="cpu")  # Transformer, Pooling
    expected = without_normalize.encode(TEXTS, convert_to_tensor=True)
    check_parity(embed(TEXTS, normalize=False), expected)
    assert (expected.norm(dim=-1) - 1).abs().max() > 0.1  # the check above is not the normalised result again
    tokens = without_normalize.encode(TEXTS, output_value="token_embeddings")
    cls = torch.stack([t[0] for t in tokens])
    check_parity(embed(TEXTS, pooling="cls", normalize=False), cls)
    check_parity(embed(TEXTS, pooling="cls"), torch.nn.functional.normalize(cls, dim=-1))
    longest = embed(TEXTS, pooling="none")
    assert [len(t) for t in longest] == [len(t) for t in tokens] and len(longest[len(SENTENCES)]) == 256
    for got, want in zip(longest, tokens):
        assert_close(got, want, HIDDEN_ATOL)
    short = bertfast.pipeline("feature-extraction", model=minilm_dir, max_length=12)
    assert len(short(LONG_TEXT, pooling="none")) == 12


@pytest.mark.parametrize("pooling", ["cls", "max", "mean_sqrt_len_tokens", "lasttoken", "weightedmean",
                                     ["cls", "max", "mean"]])
def test_each_pooling_mode_matches_sentence_transformers(tmp_path, encoder_dir, pooling):
    folder = st_folder(tmp_path / "st", encoder_dir, pooling, max_seq_length=20)
    embed = bertfast.pipeline("feature-extraction", model=folder, batch_size=2)
    expected = st_encode(folder, TEXTS)
    assert expected.shape[-1] == TINY["hidden_size"] * (1 if isinstance(pooling, str) else len(pooling))
    assert embed.max_length == 20
    check_parity(embed(TEXTS), expected)


def test_legacy_pooling_config_concatenates_in_sentence_transformers_order(tmp_path, encoder_dir):
    folder = st_folder(tmp_path / "st", encoder_dir, "mean")
    legacy = {"word_embedding_dimension": TINY["hidden_size"], "pooling_mode_cls_token": False,
              "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": True,
              "pooling_mode_mean_sqrt_len_tokens": True}
    with open(os.path.join(folder, "1_Pooling", "config.json"), "w", encoding="utf-8") as f:
        json.dump(legacy, f)
    assert read_sentence_config(folder).pooling == ("mean", "mean_sqrt_len_tokens", "lasttoken")
    check_parity(bertfast.pipeline("feature-extraction", model=folder)(TEXTS), st_encode(folder, TEXTS))


def test_dense_normalize_and_prompts_match_sentence_transformers(tmp_path, encoder_dir):
    prompts = {"query": "Represent this query: ", "passage": "Passage: "}
    folder = st_folder(tmp_path / "st", encoder_dir, "mean", dense=True, normalize=True, include_prompt=False,
                       prompts=prompts, default_prompt_name="query", max_seq_length=24)
    config = read_sentence_config(folder)
    assert config.normalize and len(config.dense) == 1 and not config.include_prompt
    embed = bertfast.pipeline("feature-extraction", model=folder)
    ours = embed(TEXTS)
    assert ours.shape == (len(TEXTS), 24)
    check_parity(ours, st_encode(folder, TEXTS))
    check_parity(embed(TEXTS, prompt_name="passage"), st_encode(folder, TEXTS, prompt_name="passage"))
    check_parity(embed(TEXTS, prompt="Q: "), st_encode(folder, TEXTS, prompt="Q: "))
    with pytest.raises(ValueError, match="prompt_name 'other' is not one of"):
        embed(TEXTS, prompt_name="other")
    with pytest.raises(ValueError, match="Dense layer takes 32-wide vectors"):
        embed(TEXTS, pooling=["cls", "mean"])


def test_do_lower_case_matches_sentence_transformers(tmp_path, encoder_dir):
    cased = shutil.copytree(encoder_dir, tmp_path / "cased")
    for name, edit in (("tokenizer_config.json", lambda c: c.update(do_lower_case=False)),
                       ("tokenizer.json", lambda c: c["normalizer"].update(lowercase=False))):
        with open(cased / name, encoding="utf-8") as f:
            content = json.load(f)
        edit(content)
        with open(cased / name, "w", encoding="utf-8") as f:
            json.dump(content, f)
    texts = [t.upper() for t in TEXTS]
    plain = bertfast.pipeline("feature-extraction", model=st_folder(tmp_path / "st", cased, "mean"))
    assert (plain(texts) - plain([t.lower() for t in texts])).abs().max() > 1e-3  # the case matters here
    folder = st_folder(tmp_path / "lower", cased, "mean")
    with open(os.path.join(folder, "sentence_bert_config.json"), "w", encoding="utf-8") as f:
        json.dump({"max_seq_length": 24, "do_lower_case": True}, f)  # the format all-MiniLM-L6-v2 has
    config = read_sentence_config(folder)
    assert config.do_lower_case and config.max_seq_length == 24
    check_parity(bertfast.pipeline("feature-extraction", model=folder)(texts), st_encode(folder, texts))


def test_plain_checkpoint_defaults_to_mean_pooling_without_normalisation(encoder_dir):
    import transformers

    hf = transformers.BertModel.from_pretrained(encoder_dir).eval()
    batch = transformers.AutoTokenizer.from_pretrained(encoder_dir)(TEXTS, padding=True, truncation=True,
                                                                  max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    embed = bertfast.pipeline("feature-extraction", model=encoder_dir)
    assert embed.sentence_config.pooling == ("mean",) and not embed.sentence_config.normalize
    check_parity(embed(TEXTS), expected)
    model = bertfast.BertModel.from_pretrained(encoder_dir)  # a loaded model: the folder is the tokenizer's
    check_parity(bertfast.pipeline("feature-extraction", model=model, tokenizer=encoder_dir)(TEXTS), expected)


def test_bad_folders_and_arguments_are_clear_errors(tmp_path, encoder_dir, minilm_dir):
    folder = st_folder(tmp_path / "st", encoder_dir, "mean", dense=True)
    dense_config = os.path.join(folder, "2_Dense", "config.json")
    with open(dense_config, encoding="utf-8") as f:
        config = json.load(f)
    with open(dense_config, "w", encoding="utf-8") as f:
        json.dump({**config, "activation_function": "torch.nn.modules.activation.GELU"}, f)
    with pytest.raises(ValueError, match="activation 'torch.nn.modules.activation.GELU' is not supported"):
        bertfast.pipeline("feature-extraction", model=folder)
    with open(os.path.join(folder, "modules.json"), encoding="utf-8") as f:
        modules = json.load(f)
    modules[2]["type"] = "sentence_transformers.sentence_transformer.modules.LayerNorm"
    with open(os.path.join(folder, "modules.json"), "w", encoding="utf-8") as f:
        json.dump(modules, f)
    with pytest.raises(ValueError, match=r"modules.json lists \['Transformer', 'Pooling', 'LayerNorm'\]"):
        bertfast.pipeline("feature-extraction", model=folder)
    embed = bertfast.pipeline("feature-extraction", model=minilm_dir)
    with pytest.raises(ValueError, match="pooling must be one of"):
        embed(SENTENCES, pooling="median")
    with pytest.raises(TypeError, match="non-empty list of strings"):
        embed([])
    with pytest.raises(ValueError, match="max_length must be between 1 and the model's max_position_embeddings"):
        bertfast.pipeline("feature-extraction", model=minilm_dir, max_length=513)


LONG_TEXTS = [LONG_TEXT, " ".join(SENTENCES * 12),
              " ".join(f"sentence {i} is about topic {i * 7 % 13}" for i in range(60))]


def test_an_onnxruntime_export_of_all_minilm_embeds_as_the_folder_without_arguments(tmp_path_factory, minilm_dir):
    out, report = exported(tmp_path_factory, minilm_dir, "feature-extraction")
    assert report.sentence_files == ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                                     "1_Pooling/config.json"]  # its 2_Normalize module has no folder
    ours = bertfast.pipeline("sentence-embedding", model=out, backend="onnxruntime")
    reference = bertfast.pipeline("sentence-embedding", model=minilm_dir)
    assert ours.max_length == 256 and ours.sentence_config.normalize and ours.sentence_config.pooling == ("mean",)
    assert min(len(reference.tokenizer(t)["input_ids"]) for t in LONG_TEXTS) > 256
    for texts in (TEXTS, LONG_TEXTS):  # short texts, and texts the folder's 256 tokens truncate
        check_parity(ours(texts), reference(texts))


def test_an_export_runs_the_folders_dense_normalize_prompts_and_lower_case(tmp_path_factory, tmp_path, encoder_dir):
    prompts = {"query": "Represent this query: ", "passage": "Passage: "}
    folder = st_folder(tmp_path / "st", encoder_dir, "mean", dense=True, normalize=True, include_prompt=False,
                       prompts=prompts, default_prompt_name="query")
    with open(os.path.join(folder, "sentence_bert_config.json"), encoding="utf-8") as f:
        options = json.load(f)
    with open(os.path.join(folder, "sentence_bert_config.json"), "w", encoding="utf-8") as f:
        json.dump({**options, "max_seq_length": 24, "do_lower_case": True}, f)  # as all-MiniLM-L6-v2 has them
    out, report = exported(tmp_path_factory, folder, "feature-extraction")
    assert {"2_Dense/config.json", "2_Dense/model.safetensors", "config_sentence_transformers.json"} <= set(
        report.sentence_files)
    ours = bertfast.pipeline("sentence-embedding", model=out, backend="onnxruntime")
    reference = bertfast.pipeline("sentence-embedding", model=folder)
    carried, source = ours.sentence_config, reference.sentence_config
    assert prompts.items() <= carried.prompts.items() and carried.prompts == source.prompts
    assert (carried.default_prompt_name, carried.include_prompt, carried.do_lower_case, carried.normalize,
            ours.max_length) == ("query", False, True, True, 24)
    torch.testing.assert_close(carried.dense[0].weight, source.dense[0].weight, rtol=0, atol=0)  # read from the export
    texts = [t.upper() for t in TEXTS]
    check_parity(ours(texts), reference(texts))
    check_parity(ours(texts), st_encode(folder, texts))
    check_parity(ours(texts, prompt_name="passage"), reference(texts, prompt_name="passage"))
