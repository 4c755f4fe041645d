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

from tests.helpers import LOGITS_ATOL, SENTENCES, TINY, assert_close, exported

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


def sparse_encoder_folder(out, mlm_dir: str, pooling: str, activation: str) -> str:
    """A SparseEncoder (Transformer fill-mask -> SpladePooling) saved by sentence-transformers."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    modules = [Transformer(mlm_dir, transformer_task="fill-mask", max_seq_length=16),
               SpladePooling(pooling_strategy=pooling, activation_function=activation)]
    SparseEncoder(modules=modules, device="cpu").save(str(out))
    return str(out)


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
