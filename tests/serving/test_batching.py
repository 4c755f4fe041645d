"""The served model without a server: per-request checks, token-budget model calls, parity with the pipeline,
errors that stay with their request."""
from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch

import bertfast
from bertfast.pipelines import PIPELINES
from bertfast.serving.batching import RequestError, ServedModel, decode_rows, load_options, token_chunks
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


def test_quantize_goes_to_from_pretrained_only_where_this_build_has_it(monkeypatch):
    assert load_options("fill-mask", None) == {}
    has_it = "quantize" in inspect.signature(PIPELINES["fill-mask"].model_class.from_pretrained).parameters
    if has_it:
        assert load_options("fill-mask", "int8") == {"quantize": "int8"}
    else:
        with pytest.raises(ValueError, match="--quantize int8 is not available in this build of bertfast"):
            load_options("fill-mask", "int8")

    class Quantizable(bertfast.BertForMaskedLM):
        @classmethod
        def from_pretrained(cls, name_or_path, dtype=torch.float32, device="cpu", quantize=None):
            raise AssertionError("not called")

    monkeypatch.setattr(PIPELINES["fill-mask"], "model_class", Quantizable)
    assert load_options("fill-mask", "int8") == {"quantize": "int8"}
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        load_options("nope", "int8")


def test_requests_with_and_without_the_optional_pair_are_served_in_separate_model_calls(sentiment_checkpoint,
                                                                                       monkeypatch):
    served = ServedModel.load(sentiment_checkpoint, "text-classification")
    calls, run = [], served.contract.run

    def counted(pipe, r):
        calls.append(sorted(r))
        return run(pipe, r)

    monkeypatch.setattr(served, "contract", dataclasses.replace(served.contract, run=counted))
    single, pair, single_again = served.infer([{"text": rows("I loved it.", "Awful."), "text_pair": None},
                                               {"text": rows("Good food."), "text_pair": rows("Slow service.")},
                                               {"text": rows("Fine.")}])
    assert sorted(calls) == [["text"], ["text", "text_pair"]]  # the two single-text requests share one call
    for result, expected in ((single, served.pipe(["I loved it.", "Awful."])), (single_again, served.pipe(["Fine."])),
                             (pair, served.pipe(["Good food."], ["Slow service."]))):
        got = [json.loads(r[0]) for r in result["result"]]
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=1e-5, rtol=0)
    uneven = served.infer([{"text": rows("a", "b"), "text_pair": rows("c")}])[0]
    assert "inputs must have the same number of rows, got {'text': 2, 'text_pair': 1}" in str(uneven)


def test_windowed_tasks_take_rows_longer_than_one_window_up_to_the_token_budget(ner_checkpoint, qa_checkpoint):
    ner = ServedModel.load(ner_checkpoint, "token-classification", max_batch_tokens=300)
    assert ner.pipe.max_length == 64 and ner.row_limit == 300
    long_text = " ".join(["Alice met Bob in Paris."] * 25)  # about 175 tokens: three windows of 64
    good, too_long = ner.infer([{"text": rows(long_text)}, {"text": rows("word " * 400)}])
    assert [json.loads(r[0]) for r in good["result"]] == [ner.pipe(long_text, aggregation_strategy="simple")]
    assert "row 0 is 402 tokens long, over this model's limit of 300 tokens" in str(too_long)

    qa = ServedModel.load(qa_checkpoint, "question-answering", max_batch_tokens=300)
    context = " ".join(["The cat sat on the mat."] * 20) + " Paris is the capital of France."
    answer, long_question, missing = qa.infer([
        {"question": rows("What is the capital of France?"), "context": rows(context)},
        {"question": rows("why " * 70), "context": rows("Because.")},
        {"question": rows("Where?")}])
    assert [json.loads(r[0]) for r in answer["result"]] == [
        qa.pipe(question="What is the capital of France?", context=context)]
    assert isinstance(long_question, RequestError) and "more than max_question_len=64" in str(long_question)
    assert "input 'context' is missing" in str(missing)


def test_rerank_rows_are_pairs_of_any_queries(cross_encoder_checkpoint):
    served = ServedModel.load(cross_encoder_checkpoint, "rerank")
    queries, documents = ["cats", "cats", "stocks"], ["The cat sat.", "Stocks fell.", "Stocks fell."]
    result, = served.infer([{"query": rows(*queries), "document": rows(*documents)}])
    assert result["score"].shape == (3, 1)
    for (query, document), score in zip(zip(queries, documents), result["score"][:, 0]):
        assert score == pytest.approx(served.pipe(query, [document])[0]["score"], abs=1e-6)
    assert served.pipe.score_pairs(queries, documents) == pytest.approx(result["score"][:, 0].tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="one query per document, got 1 queries and 2 documents"):
        served.pipe.score_pairs(["cats"], documents[:2])
