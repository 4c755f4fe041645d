"""rerank against sentence-transformers' CrossEncoder built from the same random transformers checkpoint."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from sentence_transformers import CrossEncoder

import bertfast
from tests.helpers import SENTENCES, exported

SCORE_ATOL = 1e-5  # rerank scores vs CrossEncoder.predict
QUERY = "Who is playing music on the stage?"
DOCUMENTS = SENTENCES + ["", "guitar", " ".join(["a long document about many things"] * 120)]  # the last > 512 tokens


@pytest.fixture(scope="module")
def rerank(cross_encoder_checkpoint):
    return bertfast.pipeline("rerank", model=cross_encoder_checkpoint)


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_checkpoint):
    return CrossEncoder(cross_encoder_checkpoint, device="cpu")


def by_index(ranked: list[dict]) -> torch.Tensor:
    """The scores of a ranking, back in the documents' order."""
    return torch.tensor([r["score"] for r in sorted(ranked, key=lambda r: r["index"])])


def test_scores_and_ranking_match_cross_encoder(rerank, cross_encoder):
    ranked = rerank(QUERY, DOCUMENTS)
    expected = torch.as_tensor(cross_encoder.predict([(QUERY, d) for d in DOCUMENTS]))
    assert expected.max() - expected.min() > 0.1  # the random cross-encoder tells the documents apart
    torch.testing.assert_close(by_index(ranked), expected, atol=SCORE_ATOL, rtol=0)
    assert [r["index"] for r in ranked] == [r["corpus_id"] for r in cross_encoder.rank(QUERY, DOCUMENTS)]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert all(set(r) == {"index", "score"} for r in ranked)


def test_top_k_and_return_documents(rerank, cross_encoder):
    ranked = rerank(QUERY, DOCUMENTS)
    top = rerank(QUERY, DOCUMENTS, top_k=3, return_documents=True)
    expected = cross_encoder.rank(QUERY, DOCUMENTS, top_k=3, return_documents=True)
    assert [r["index"] for r in top] == [r["index"] for r in ranked[:3]] == [r["corpus_id"] for r in expected]
    assert [r["text"] for r in top] == [r["text"] for r in expected] == [DOCUMENTS[r["index"]] for r in top]
    assert len(rerank(QUERY, DOCUMENTS, top_k=100)) == len(DOCUMENTS)
    assert rerank(QUERY, ["only one"])[0]["index"] == 0


def test_raw_logits_and_pipeline_options_match_cross_encoder(cross_encoder_checkpoint, rerank):
    raw = rerank(QUERY, DOCUMENTS, function_to_apply="none")
    identity = CrossEncoder(cross_encoder_checkpoint, device="cpu", activation_fn=torch.nn.Identity())
    expected = torch.as_tensor(identity.predict([(QUERY, d) for d in DOCUMENTS]))
    torch.testing.assert_close(by_index(raw), expected, atol=SCORE_ATOL, rtol=0)
    small = bertfast.pipeline("rerank", model=cross_encoder_checkpoint, max_length=16, batch_size=2)
    short = CrossEncoder(cross_encoder_checkpoint, device="cpu", max_length=16)
    expected = torch.as_tensor(short.predict([(QUERY, d) for d in DOCUMENTS], batch_size=2))
    torch.testing.assert_close(by_index(small(QUERY, DOCUMENTS)), expected, atol=SCORE_ATOL, rtol=0)


def test_the_activation_a_cross_encoder_saved_is_the_default(cross_encoder_checkpoint, tmp_path):
    saved = tmp_path / "identity"
    CrossEncoder(cross_encoder_checkpoint, device="cpu", activation_fn=torch.nn.Identity()).save(str(saved))
    expected = torch.as_tensor(CrossEncoder(str(saved), device="cpu").predict([(QUERY, d) for d in DOCUMENTS]))
    assert expected.min() < 0 or expected.max() > 1  # raw logits, not probabilities
    ranked = bertfast.pipeline("rerank", model=saved)(QUERY, DOCUMENTS)
    torch.testing.assert_close(by_index(ranked), expected, atol=SCORE_ATOL, rtol=0)

    def legacy(name: str, activation: str) -> str:
        """A checkpoint with sentence-transformers < 4's key for the activation in config.json."""
        path = tmp_path / name
        shutil.copytree(cross_encoder_checkpoint, path)
        with open(path / "config.json") as f:
            config = json.load(f)
        with open(path / "config.json", "w") as f:
            json.dump({**config, "sbert_ce_default_activation_function": activation}, f)
        return str(path)

    old = legacy("legacy", "torch.nn.modules.linear.Identity")
    expected = torch.as_tensor(CrossEncoder(old, device="cpu").predict([(QUERY, d) for d in DOCUMENTS]))
    torch.testing.assert_close(by_index(bertfast.pipeline("rerank", model=old)(QUERY, DOCUMENTS)), expected,
                               atol=SCORE_ATOL, rtol=0)
    with pytest.raises(ValueError, match="asks for the activation 'torch.nn.modules.activation.Tanh'"):
        bertfast.pipeline("rerank", model=legacy("tanh", "torch.nn.modules.activation.Tanh"))
    assert os.path.exists(saved / "config_sentence_transformers.json")


def test_onnxruntime_backend_runs_a_text_classification_export(cross_encoder_checkpoint, rerank, tmp_path_factory):
    out_dir, _ = exported(tmp_path_factory, cross_encoder_checkpoint, "text-classification")
    onnx = bertfast.pipeline("rerank", model=out_dir, backend="onnxruntime")
    torch.testing.assert_close(by_index(onnx(QUERY, DOCUMENTS)), by_index(rerank(QUERY, DOCUMENTS)),
                               atol=SCORE_ATOL, rtol=0)


@pytest.mark.parametrize("call, error, match", [
    (lambda r: r(QUERY, DOCUMENTS, top_k=0), ValueError, "top_k must be a positive int"),
    (lambda r: r(QUERY, []), ValueError, "documents must be a non-empty list of strings"),
    (lambda r: r(QUERY, ["a", 5]), ValueError, "documents must be a non-empty list of strings"),
    (lambda r: r(QUERY, "one document"), TypeError, r"documents must be a list of strings \(one document is"),
    (lambda r: r(None, ["a"]), TypeError, "query must be a string"),
    (lambda r: r(QUERY, ["a"], function_to_apply="softplus"), ValueError, "function_to_apply must be one of"),
], ids=["top_k_0", "no_documents", "int_document", "str_documents", "none_query", "function"])
def test_bad_input_is_a_clear_error(rerank, call, error, match):
    with pytest.raises(error, match=match):
        call(rerank)


def test_a_classifier_with_several_labels_is_not_a_cross_encoder(sentiment_checkpoint):
    with pytest.raises(ValueError, match="rerank needs a cross-encoder.*has 3"):
        bertfast.pipeline("rerank", model=sentiment_checkpoint)
