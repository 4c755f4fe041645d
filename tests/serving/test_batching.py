"""The served model without a server: per-request checks, token-budget model calls, parity with the pipeline,
errors that stay with their request."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import bertfast
from bertfast.serving.repository import write_triton_repository
from bertfast.serving.batching import RequestError, ServedModel, decode_rows, token_chunks
from bertfast.serving.load import mixed_length_texts


def rows(*texts: str | bytes) -> np.ndarray:
    """A BYTES input as Triton hands it over: an object array (N, 1) of bytes."""
    return np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=np.object_)


@pytest.fixture(scope="module")
def embedder(tiny_long_checkpoint) -> ServedModel:
    return ServedModel.load(tiny_long_checkpoint, "feature-extraction", max_batch_tokens=600)


def test_token_chunks_cover_the_rows_in_order_within_the_budget():
    lengths = [5, 300, 200, 100, 600, 1, 599]
    chunks = token_chunks(lengths, 600)
    assert chunks == [range(0, 3), range(3, 4), range(4, 5), range(5, 7)]
    assert all(sum(lengths[i] for i in chunk) <= 600 for chunk in chunks)
    assert token_chunks([], 600) == []
    with pytest.raises(ValueError, match="row 1 has 601 tokens, over the budget of 600"):
        token_chunks([3, 601], 600)


def test_decode_rows_refuses_what_cannot_be_text():
    assert decode_rows("text", rows("café", "東京")) == ["café", "東京"]
    refused = [(None, "input 'text' is missing"), (rows(), "has no rows"), (rows("ok", ""), "row 1 is empty"),
               (np.array([[3]], dtype=np.object_), "row 0 is not text but int"),
               (rows("ok", b"\xff\xfe"), r"row 1 is not valid UTF-8 \(invalid start byte at byte 0\)")]
    for array, message in refused:
        with pytest.raises(RequestError, match=message):
            decode_rows("text", array)


def test_each_text_is_tokenized_once(embedder, monkeypatch):
    """The tokens counted for the budget are the ones the model runs: the pipeline does not tokenize again."""
    texts = mixed_length_texts(embedder.pipe.tokenizer, 5, 16, 256, seed=4)
    expected = embedder.pipe(texts).numpy()
    tokenized, tokenize = [], type(embedder.pipe.tokenizer).__call__

    def counted(tokenizer, text, *args, **kwargs):
        tokenized.append(list(text))
        return tokenize(tokenizer, text, *args, **kwargs)

    monkeypatch.setattr(type(embedder.pipe.tokenizer), "__call__", counted)
    results = embedder.infer([{"text": rows(*texts[:2])}, {"text": rows(*texts[2:])}])
    assert tokenized == [texts[:2], texts[2:]]  # once per request, in prepare
    np.testing.assert_allclose(np.concatenate([r["embedding"] for r in results]), expected, rtol=1e-5, atol=1e-6)


def test_gathered_requests_split_by_tokens_match_the_pipeline(embedder, tiny_long_checkpoint, monkeypatch):
    texts = mixed_length_texts(embedder.pipe.tokenizer, 9, 16, 256, seed=3)
    length = {t: len(ids) for t, ids in zip(texts, embedder.pipe.tokenizer(texts)["input_ids"])}
    calls, run = [], embedder.contract.run

    def counted(pipe, r):
        calls.append(r["text"])
        return run(pipe, r)

    monkeypatch.setattr(embedder, "contract", dataclasses.replace(embedder.contract, run=counted))
    results = embedder.infer([{"text": rows(*texts[:4])}, {"text": rows(*texts[4:5])}, {"text": rows(*texts[5:])}])
    assert len(calls) > 1 and all(sum(length[t] for t in call) <= 600 for call in calls)
    assert [t for call in calls for t in call] == texts  # split, nothing dropped or reordered
    assert [r["embedding"].shape[0] for r in results] == [4, 1, 4]
    expected = bertfast.pipeline("feature-extraction", model=tiny_long_checkpoint)(texts).numpy()
    np.testing.assert_allclose(np.concatenate([r["embedding"] for r in results]), expected, atol=1e-5, rtol=0)


def test_a_refused_request_leaves_its_neighbours_served(embedder):
    long_text = "word " * 600
    results = embedder.infer([{"text": rows("a short text")}, {"text": rows("fine", long_text)},
                              {"text": rows(b"\xc3")}, {"text": None}, {"text": rows("another one")}])
    assert [type(r).__name__ for r in results] == ["dict", "RequestError", "RequestError", "RequestError", "dict"]
    assert "row 1 is 602 tokens long, over this model's limit of 512 tokens: split the text" in str(results[1])
    expected = embedder.pipe(["a short text", "another one"]).numpy()
    np.testing.assert_allclose(np.concatenate([results[0]["embedding"], results[4]["embedding"]]), expected,
                               atol=1e-5, rtol=0)


def test_fill_mask_and_next_sentence_rows_are_checked_per_request(tiny_vocab_checkpoint):
    fill = ServedModel.load(tiny_vocab_checkpoint, "fill-mask")
    good, bad = fill.infer([{"text": rows("The [MASK] sat.", "[MASK] and [MASK].")}, {"text": rows("no mask")}])
    assert [json.loads(r[0]) for r in good["result"]] == fill.pipe(["The [MASK] sat.", "[MASK] and [MASK]."])
    assert isinstance(bad, RequestError) and "row 0: the text has no [MASK] token" in str(bad)
    nsp = ServedModel.load(tiny_vocab_checkpoint, "next-sentence")
    good, missing, uneven = nsp.infer([{"text": rows("It rained.", "A"), "text_pair": rows("Roads were wet.", "B")},
                                       {"text": rows("It rained.")},
                                       {"text": rows("It rained.", "A"), "text_pair": rows("B")}])
    expected = nsp.pipe(["It rained.", "A"], ["Roads were wet.", "B"])
    np.testing.assert_allclose(good["logits"], [r["logits"] for r in expected], atol=1e-5, rtol=0)
    assert [row[0].decode() for row in good["label"]] == [r["label"] for r in expected]
    assert "input 'text_pair' is missing" in str(missing)
    assert "inputs must have the same number of rows, got {'text': 2, 'text_pair': 1}" in str(uneven)


def test_a_failing_model_call_fails_only_the_request_that_caused_it(embedder, monkeypatch):
    run = embedder.contract.run

    def flaky(pipe, r):
        if "poison" in r["text"]:
            raise RuntimeError("the model broke")
        return run(pipe, r)

    monkeypatch.setattr(embedder, "contract", dataclasses.replace(embedder.contract, run=flaky))
    results = embedder.infer([{"text": rows("first")}, {"text": rows("poison")}, {"text": rows("third")}])
    assert isinstance(results[1], RuntimeError) and str(results[1]) == "the model broke"
    np.testing.assert_allclose(np.concatenate([results[0]["embedding"], results[2]["embedding"]]),
                               embedder.pipe(["first", "third"]).numpy(), atol=1e-5, rtol=0)


def test_a_token_budget_below_the_longest_text_is_refused(tiny_long_checkpoint):
    with pytest.raises(ValueError, match=r"max_batch_tokens \(100\) must be at least the model's max_length \(512\)"):
        ServedModel.load(tiny_long_checkpoint, "feature-extraction", max_batch_tokens=100)


def test_an_int8_served_model_answers_as_the_int8_pipeline(tiny_long_checkpoint, tmp_path):
    served = ServedModel.load(tiny_long_checkpoint, "feature-extraction", quantize="int8")
    texts = ["an int8 model", "served as its pipeline would answer"]
    result, = served.infer([{"text": rows(*texts)}])
    direct = bertfast.pipeline("feature-extraction", model=tiny_long_checkpoint, quantize="int8")(texts).numpy()
    np.testing.assert_allclose(result["embedding"], direct, atol=1e-5, rtol=0)
    fp32 = bertfast.pipeline("feature-extraction", model=tiny_long_checkpoint)(texts).numpy()
    assert np.abs(result["embedding"] - fp32).max() > 1e-6  # it did run in int8
    for bad, message in (({"quantize": "int4"}, "quantize='int4' is not a quantization mode"),
                         ({"quantize": "int8", "dtype": "bfloat16"}, "quantizes a float32 model")):
        with pytest.raises(ValueError, match=message):
            write_triton_repository(tiny_long_checkpoint, tmp_path / "repo", task="feature-extraction",
                                    backend="python", **bad)
        assert not (tmp_path / "repo").exists()  # refused before anything was written
