"""sparse-embedding (SPLADE) against a reference written here on transformers' BertForMaskedLM logits, and
against sentence-transformers' SparseEncoder on SparseEncoder folders."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import bertfast
from bertfast.pipelines import sparse_embedding

from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL, SENTENCES, TINY, assert_close, exported, sparse_encoder_folder

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TEXTS = [*SENTENCES, " ".join(["a long text about nothing in particular"] * 20), "x"]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, minilm_dir) -> str:
    """A random transformers BertForMaskedLM over the bert-base-uncased vocabulary, with its tokenizer files."""
    import transformers

    path = tmp_path_factory.mktemp("mlm")
    torch.manual_seed(11)
    transformers.BertForMaskedLM(transformers.BertConfig(**{**TINY, "vocab_size": 30522})).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(minilm_dir, name), path)
    return str(path)


def reference(mlm_dir: str, texts: list[str], pooling: str = "max", twice: bool = False) -> torch.Tensor:
    """SPLADE by its definition on transformers' logits: log(1 + relu(logits)) (log1p once more with
    ``twice``), padding positions zeroed, max or sum over the sequence -> (N, vocab)."""
    import transformers

    model = transformers.BertForMaskedLM.from_pretrained(mlm_dir).eval()
    batch = transformers.AutoTokenizer.from_pretrained(mlm_dir)(texts, padding=True, truncation=True,
                                                               max_length=64, return_tensors="pt")
    with torch.no_grad():
        weights = torch.log1p(torch.relu(model(**batch).logits))  # (N, S, vocab)
    weights = torch.log1p(weights) if twice else weights
    weights = weights * batch["attention_mask"][..., None]
    return weights.amax(1) if pooling == "max" else weights.sum(1)


def test_dense_weights_match_the_reference_and_padding_is_excluded(mlm_dir, monkeypatch):
    splade = bertfast.pipeline("sparse-embedding", model=mlm_dir, batch_size=3)
    expected = reference(mlm_dir, TEXTS)
    ours = splade(TEXTS, return_dense=True)
    assert ours.shape == (len(TEXTS), 30522) and (ours > 0).sum() > 1000
    assert_close(ours, expected, LOGITS_ATOL)
    alone = torch.stack([splade(t, return_dense=True) for t in TEXTS])  # no padding at all
    assert_close(ours, alone, LOGITS_ATOL)
    monkeypatch.setattr(sparse_embedding, "CHUNK_TOKENS", 7)  # chunks that cut through sequences
    assert_close(splade(TEXTS, return_dense=True), ours, 1e-6)
    assert_close(splade(TEXTS, return_dense=True, pooling="sum"), reference(mlm_dir, TEXTS, "sum"), LOGITS_ATOL)


def test_sparse_output_lists_the_non_zero_weights_largest_first(mlm_dir):
    splade = bertfast.pipeline("sparse-embedding", model=mlm_dir)
    dense = splade(TEXTS, return_dense=True)
    expected = reference(mlm_dir, TEXTS)
    for row, mine, want in zip(splade(TEXTS), dense, expected):
        values = [entry["value"] for entry in row]
        assert values == sorted(values, reverse=True) and min(values) > 0
        assert sorted(entry["index"] for entry in row) == torch.nonzero(mine).squeeze(-1).tolist()
        clear = torch.nonzero(want > 1e-3).squeeze(-1).tolist()  # entries the 1e-4 tolerance cannot flip
        assert set(clear) <= {entry["index"] for entry in row}
    top = splade(TEXTS[0], top_k=5)
    order = expected[0].topk(5).indices.tolist()
    assert [entry["index"] for entry in top] == order
    assert_close(torch.tensor([entry["value"] for entry in top]), expected[0, order], LOGITS_ATOL)
    with pytest.raises(ValueError, match="top_k must be None"):
        splade(TEXTS, top_k=0)
    with pytest.raises(ValueError, match="pooling must be one of"):
        splade(TEXTS, pooling="mean")


def test_onnxruntime_fill_mask_export_gives_the_same_weights(tmp_path_factory, tiny_vocab_checkpoint):
    out, _ = exported(tmp_path_factory, tiny_vocab_checkpoint, "fill-mask")
    ours = bertfast.pipeline("sparse-embedding", model=out, backend="onnxruntime")
    assert isinstance(ours.model, bertfast.OnnxModel)
    reference = bertfast.pipeline("sparse-embedding", model=tiny_vocab_checkpoint)
    assert_close(ours(TEXTS, return_dense=True), reference(TEXTS, return_dense=True), LOGITS_ATOL)
    assert_close(ours(TEXTS, return_dense=True, pooling="sum"), reference(TEXTS, return_dense=True, pooling="sum"),
                 LOGITS_ATOL)


@pytest.mark.parametrize("pooling, activation", [("max", "relu"), ("sum", "log1p_relu")])
def test_sparse_encoder_folders_match_sentence_transformers(tmp_path, mlm_dir, pooling, activation):
    from sentence_transformers import SparseEncoder

    folder = sparse_encoder_folder(tmp_path / "splade", mlm_dir, pooling, activation)
    splade = bertfast.pipeline("sparse-embedding", model=folder)
    assert splade.max_length == 16
    expected = SparseEncoder(folder, device="cpu").encode(TEXTS, convert_to_tensor=True,
                                                          convert_to_sparse_tensor=False).cpu()
    assert_close(splade(TEXTS, return_dense=True), expected, LOGITS_ATOL)


def test_folders_of_the_other_kind_are_refused(tmp_path, mlm_dir, minilm_dir):
    folder = sparse_encoder_folder(tmp_path / "splade", mlm_dir, "max", "relu")
    with pytest.raises(ValueError, match=r"sentence-transformers SparseEncoder: use pipeline\('sparse-embedding'"):
        bertfast.pipeline("feature-extraction", model=folder)
    with pytest.raises(ValueError, match=r"SentenceTransformer: use pipeline\('feature-extraction'"):
        bertfast.pipeline("sparse-embedding", model=minilm_dir)
    with open(os.path.join(folder, "1_SpladePooling", "config.json"), "w", encoding="utf-8") as f:
        json.dump({"pooling_strategy": "mean"}, f)
    with pytest.raises(ValueError, match="pooling 'mean' / activation 'relu' not supported"):
        bertfast.pipeline("sparse-embedding", model=folder)


LONG_TEXTS = [" ".join(SENTENCES * 12),
              " ".join(f"sentence {i} is about topic {i * 7 % 13} and more" for i in range(60))]  # over 256 tokens


@pytest.fixture(scope="module")
def real_splade(tmp_path_factory, splade_mlm_dir) -> str:
    """The real SPLADE model as a SparseEncoder folder (SpladePooling max / relu, 256 tokens, as its package
    runs it), saved by sentence-transformers."""
    return sparse_encoder_folder(tmp_path_factory.mktemp("real_splade") / "splade", splade_mlm_dir,
                                 max_seq_length=256)


def test_a_real_splade_encoder_and_its_export_match_sentence_transformers(tmp_path_factory, real_splade):
    from sentence_transformers import SparseEncoder

    splade = bertfast.pipeline("sparse-embedding", model=real_splade)
    assert splade.max_length == 256 and min(len(splade.tokenizer(t)["input_ids"]) for t in LONG_TEXTS) > 256
    expected = SparseEncoder(real_splade, device="cpu").encode([*TEXTS, *LONG_TEXTS], convert_to_tensor=True,
                                                               convert_to_sparse_tensor=False).cpu()
    assert_close(splade([*TEXTS, *LONG_TEXTS], return_dense=True), expected, LOGITS_ATOL)
    out, report = exported(tmp_path_factory, real_splade, "fill-mask")
    assert report.sentence_files == ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                                     "1_SpladePooling/config.json"]
    ours = bertfast.pipeline("sparse-embedding", model=out, backend="onnxruntime")  # no arguments: the folder's
    assert ours.max_length == 256
    for texts in (TEXTS, LONG_TEXTS):  # short and over 256 tokens
        assert_close(ours(texts, return_dense=True), splade(texts, return_dense=True), HIDDEN_ATOL)


def test_an_export_follows_a_sparse_encoders_pooling_activation_and_prompt(tmp_path_factory, splade_mlm_dir):
    folder = sparse_encoder_folder(tmp_path_factory.mktemp("splade_variant") / "splade", splade_mlm_dir, "sum",
                                   "log1p_relu", 256, prompts={"query": "query: ", "document": ""},
                                   default_prompt_name="query")
    splade = bertfast.pipeline("sparse-embedding", model=folder)
    texts = [*TEXTS, *LONG_TEXTS]
    plain = splade(texts, return_dense=True, pooling="max", activation="relu", prompt="")
    assert (splade(texts, return_dense=True) - plain).abs().max() > 1  # the folder's settings matter here
    out, _ = exported(tmp_path_factory, folder, "fill-mask")
    ours = bertfast.pipeline("sparse-embedding", model=out, backend="onnxruntime")
    # a sum over up to 256 tokens of weights up to ~3: float32 sums in another order differ by up to 4e-5
    assert_close(ours(texts, return_dense=True), splade(texts, return_dense=True), LOGITS_ATOL)
    assert_close(ours(texts, return_dense=True, prompt_name="document"),
                 splade(texts, return_dense=True, prompt_name="document"), LOGITS_ATOL)
