"""text-classification against transformers' TextClassificationPipeline on the same random checkpoints."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import transformers

import bertfast
from tests.helpers import SENTENCES, exported

SCORE_ATOL = 1e-4  # pipeline scores vs transformers'
LONG = " ".join(["a sentence that goes on and on"] * 20)  # past the checkpoint's 64 positions: truncated
TEXTS = SENTENCES + ["", "ok", LONG]


def hf_pipeline(path: str, max_length: int = 64):
    """transformers' pipeline; its tokenizer capped at the checkpoint's positions (it truncates only when told)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, model_max_length=max_length)
    return transformers.pipeline("text-classification", model=path, tokenizer=tokenizer, device="cpu")


def with_config(source: str, target: str, **changes) -> str:
    """A copy of checkpoint ``source`` whose config.json has ``changes``."""
    shutil.copytree(source, target)
    with open(os.path.join(target, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(target, "config.json"), "w") as f:
        json.dump({**config, **changes}, f)
    return target


def assert_same_labels(ours, theirs) -> float:
    """Same labels in the same order, scores within SCORE_ATOL; -> the largest score difference."""
    ours, theirs = (r if isinstance(r, list) else [r] for r in (ours, theirs))
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    diff = max(abs(o["score"] - t["score"]) for o, t in zip(ours, theirs))
    assert diff <= SCORE_ATOL, diff
    return diff


def assert_same_results(ours, theirs) -> None:
    """The same shape as transformers' result (dicts and lists nested alike), labels equal, scores within
    SCORE_ATOL."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs) == ["label", "score"] and ours["label"] == theirs["label"]
        assert abs(ours["score"] - theirs["score"]) <= SCORE_ATOL
        return
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        assert_same_results(o, t)


@pytest.fixture(scope="module")
def classify(sentiment_checkpoint):
    return bertfast.pipeline("text-classification", model=sentiment_checkpoint)


@pytest.fixture(scope="module")
def hf_classify(sentiment_checkpoint):
    return hf_pipeline(sentiment_checkpoint)


def test_labels_and_scores_match_transformers(classify, hf_classify):
    results = classify(TEXTS)
    assert len({r["label"] for r in results}) > 1  # the scaled head tells the texts apart
    assert_same_results(results, hf_classify(TEXTS, truncation=True))  # a list of dicts
    for text in TEXTS:
        assert_same_results(classify(text), hf_classify(text, truncation=True))  # a list of one dict


TOP_K_CALLS = {  # transformers' shapes for each top_k: not given (its "legacy" shape), None (every label), ints
    "default": {}, "all": {"top_k": None}, **{f"top_k={k}": {"top_k": k} for k in (1, 2, 3, 5)}}


@pytest.mark.parametrize("call", TOP_K_CALLS)
@pytest.mark.parametrize("function", [None, "softmax", "sigmoid", "none", "SIGMOID"])
def test_every_top_k_and_function_to_apply_give_transformers_results(classify, hf_classify, call, function):
    kwargs = {**TOP_K_CALLS[call], "function_to_apply": function}
    pair = {"text": TEXTS[0], "text_pair": TEXTS[1]}
    for inputs in (TEXTS[2], TEXTS[:3], pair, [pair, pair]):
        ours, theirs = classify(inputs, **kwargs), hf_classify(inputs, truncation=True, **kwargs)
        assert_same_results(ours, theirs)
    if "top_k" in kwargs:  # a list per input, sorted best first, min(top_k, 3) long (all three for None)
        ranked = classify(TEXTS[:3], **kwargs)
        assert [len(r) for r in ranked] == [min(kwargs["top_k"] or 3, 3)] * 3
        assert all([d["score"] for d in r] == sorted((d["score"] for d in r), reverse=True) for r in ranked)
    one = hf_classify(TEXTS[0], text_pair=TEXTS[1], truncation=True, **kwargs)  # a string and text_pair=
    assert_same_results(classify(TEXTS[0], text_pair=TEXTS[1], **kwargs), one)
    assert_same_results(classify((TEXTS[0], TEXTS[1]), **kwargs), hf_classify(pair, truncation=True, **kwargs))


def test_top_k_none_gives_every_label_as_top_k_num_labels_does(classify):
    assert classify(TEXTS, top_k=None) == classify(TEXTS, top_k=3) == classify(TEXTS, top_k=30)
    assert {d["label"] for d in classify(TEXTS[0], top_k=None)} == {"NEGATIVE", "NEUTRAL", "POSITIVE"}
    assert classify(TEXTS, top_k=1) == [[best] for best in classify(TEXTS)]
    assert classify(TEXTS[0]) == classify([TEXTS[0]]) == classify(TEXTS[0], top_k=1)


def test_text_pairs_in_every_form_match_transformers(classify, hf_classify):
    firsts, seconds = SENTENCES, SENTENCES[1:] + SENTENCES[:1]
    expected = [hf_classify({"text": a, "text_pair": b}, truncation=True) for a, b in zip(firsts, seconds)]
    for a, b, want in zip(firsts, seconds, expected):
        for ours in (classify((a, b)), classify({"text": a, "text_pair": b}), classify(a, text_pair=b)):
            assert_same_labels(ours, want)
    for batch in (classify(list(zip(firsts, seconds))), classify([{"text": a, "text_pair": b} for a, b in
                                                                  zip(firsts, seconds)]),
                  classify(firsts, text_pair=seconds)):
        for ours, want in zip(batch, expected):
            assert_same_labels(ours, want)
    assert [classify({"text": firsts[0]})] == classify(firsts[0])  # a dict in, a dict out; a string, a list


def test_default_function_follows_problem_type_and_labels_as_transformers(sentiment_checkpoint,
                                                                          cross_encoder_checkpoint, tmp_path):
    multi_label = with_config(sentiment_checkpoint, tmp_path / "multi", problem_type="multi_label_classification")
    regression = with_config(cross_encoder_checkpoint, tmp_path / "regression", problem_type="regression")
    for function, path in (("softmax", sentiment_checkpoint), ("sigmoid", multi_label),
                           ("sigmoid", cross_encoder_checkpoint), ("none", regression)):
        ours, hf = bertfast.pipeline("text-classification", model=path), hf_pipeline(path, max_length=512)
        for text in SENTENCES:
            result = ours(text, top_k=3)
            assert_same_labels(result, hf(text, top_k=3, truncation=True))
            assert result == ours(text, top_k=3, function_to_apply=function)


def test_max_length_and_batch_size_are_pipeline_options(sentiment_checkpoint):
    ours = bertfast.pipeline("text-classification", model=sentiment_checkpoint, max_length=8, batch_size=2)
    hf = hf_pipeline(sentiment_checkpoint, max_length=8)
    assert ours.max_length == 8 and ours.batch_size == 2
    for result, expected in zip(ours(TEXTS, top_k=3), hf(TEXTS, top_k=3, truncation=True)):
        assert_same_labels(result, expected)
    with pytest.raises(ValueError, match=r"max_length must be between 1 and the model's max_position_embeddings \(64\), got 65"):
        bertfast.pipeline("text-classification", model=sentiment_checkpoint, max_length=65)


def test_sentiment_analysis_alias_and_onnxruntime_backend(sentiment_checkpoint, classify, tmp_path_factory):
    alias = bertfast.pipeline("sentiment-analysis", model=sentiment_checkpoint)
    assert isinstance(alias, type(classify)) and alias(TEXTS) == classify(TEXTS)
    out_dir, _ = exported(tmp_path_factory, sentiment_checkpoint, "text-classification")
    onnx = bertfast.pipeline("text-classification", model=out_dir, backend="onnxruntime")
    for result, expected in zip(onnx(TEXTS, top_k=3), classify(TEXTS, top_k=3)):
        assert_same_labels(result, expected)


@pytest.mark.parametrize("call, error, match", [
    (lambda c: c("a", top_k=0), ValueError, "top_k must be a positive int"),
    (lambda c: c("a", top_k=-2), ValueError, "top_k must be a positive int"),
    (lambda c: c("a", top_k=1.5), ValueError, "top_k must be a positive int"),
    (lambda c: c("a", top_k=True), ValueError, "top_k must be a positive int"),
    (lambda c: c("a", function_to_apply="relu"), ValueError, "function_to_apply must be one of"),
    (lambda c: c(5), TypeError, "each input must be a string"),
    (lambda c: c(["a", None]), TypeError, "each input must be a string"),
    (lambda c: c([]), TypeError, "non-empty list"),
    (lambda c: c(("a", 5)), TypeError, "texts must be strings"),
    (lambda c: c({"txt": "a"}), ValueError, "keys 'text' and optionally 'text_pair'"),
    (lambda c: c(["a", ("b", "c")]), ValueError, "every input a text_pair or none"),
    (lambda c: c(["a", "b"], text_pair=["c"]), ValueError, "one pair per text"),
    (lambda c: c(("a", "b"), text_pair="c"), ValueError, "cannot be pairs themselves"),
], ids=["top_k_0", "top_k_negative", "top_k_float", "top_k_bool", "function", "int", "none_in_list", "empty",
        "int_in_pair", "dict_keys", "mixed_pairs", "pair_count", "pair_twice"])
def test_bad_input_is_a_clear_error(classify, call, error, match):
    with pytest.raises(error, match=match):
        call(classify)
