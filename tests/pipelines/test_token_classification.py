"""token-classification against transformers' TokenClassificationPipeline on the same random checkpoint: the
same entities (labels, groups, words, character offsets), scores within 1e-4; long texts in windows."""
from __future__ import annotations

import pytest
import transformers

import bertfast
from bertfast.pipelines.token_classification import AGGREGATIONS
from tests.helpers import exported

SCORE_ATOL = 1e-4
TEXTS = {
    "names": "My name is Wolfgang Amadeus Mozart and I live in Berlin.",
    "subwords": "Unbelievably, the tokenizers split hyperparameterization and McDonaldsville.",
    "unicode": "Café naïve résumé — 東京 and Zürich, ÀÉÎÕÜ.",
    "unknown": "I love 🍕 and 🚀! 👍🏽 ok",
    "spaces": "  tabs\tand\nnewlines   and  spaces  ",
    "empty": "",
}
LONG = " ".join(TEXTS[name] for name in ("names", "subwords", "unicode", "unknown", "names"))  # 70 tokens


def plain(entities: list[dict]) -> list[dict]:
    """transformers' entities with Python floats for numpy scores."""
    return [{k: float(v) if k == "score" else v for k, v in e.items()} for e in entities]


def without_scores(entities: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "score"} for e in entities]


def assert_same_entities(ours: list[dict], theirs: list[dict]) -> float:
    """Identical entities but for the scores, which agree within SCORE_ATOL; -> the largest score difference."""
    theirs = plain(theirs)
    assert without_scores(ours) == without_scores(theirs)
    diff = max((abs(o["score"] - t["score"]) for o, t in zip(ours, theirs)), default=0.0)
    assert diff <= SCORE_ATOL, diff
    return diff


@pytest.fixture(scope="module")
def ner(ner_checkpoint):
    return bertfast.pipeline("token-classification", model=ner_checkpoint)


@pytest.fixture(scope="module")
def hf_ner(ner_checkpoint):
    return transformers.pipeline("token-classification", model=ner_checkpoint, device="cpu")


@pytest.mark.parametrize("strategy", AGGREGATIONS)
def test_entities_match_transformers(ner, hf_ner, strategy):
    found = 0
    for text in TEXTS.values():
        ours = ner(text, aggregation_strategy=strategy)
        assert_same_entities(ours, hf_ner(text, aggregation_strategy=strategy))
        found += len(ours)
        for entity in ours:
            assert 0 <= entity["start"] < entity["end"] <= len(text)
    assert found > 20  # the scaled head labels most tokens as entities
    groups = ner(TEXTS["names"], aggregation_strategy=strategy)
    if strategy != "none":  # tokens were merged into groups
        assert len(groups) < len(ner(TEXTS["names"]))
        assert any(" " in g["word"] for g in groups)


def test_word_strategies_settle_words_whose_pieces_disagree(ner):
    """On the subword text the pieces of some word get different labels; first / average / max give it one."""
    tokens = ner(TEXTS["subwords"], ignore_labels=[])
    pieces = [t for t in tokens if t["word"].startswith("##")]
    assert pieces and any(p["entity"] != tokens[tokens.index(p) - 1]["entity"] for p in pieces)
    for strategy in ("first", "average", "max"):
        words = ner(TEXTS["subwords"], aggregation_strategy=strategy, ignore_labels=[])
        assert not any(w["word"].startswith("##") or "##" in w["word"] for w in words)


def test_batches_and_ignore_labels_match_transformers(ner, hf_ner):
    texts = list(TEXTS.values())
    for strategy in ("none", "simple", "max"):
        for ours, text in zip(ner(texts, aggregation_strategy=strategy), texts):
            assert_same_entities(ours, hf_ner(text, aggregation_strategy=strategy))
    for ignore in ([], ["O", "I-MISC"], ["MISC"]):
        for strategy in ("none", "simple"):
            ours = ner(TEXTS["names"], aggregation_strategy=strategy, ignore_labels=ignore)
            assert_same_entities(ours, hf_ner(TEXTS["names"], aggregation_strategy=strategy, ignore_labels=ignore))
    assert len(ner(TEXTS["names"], ignore_labels=[])) == len(ner.tokenizer.tokenize(TEXTS["names"]))
    assert ner("ner", aggregation_strategy="SIMPLE") == ner("ner", aggregation_strategy="simple")


@pytest.mark.parametrize("stride", [0, 5, 11])
def test_long_texts_run_in_windows_as_transformers_with_stride(ner_checkpoint, stride):
    ours = bertfast.pipeline("ner", model=ner_checkpoint, max_length=24, batch_size=3)
    tokenizer = transformers.AutoTokenizer.from_pretrained(ner_checkpoint, model_max_length=24)
    hf = transformers.pipeline("ner", model=ner_checkpoint, tokenizer=tokenizer, device="cpu", stride=stride,
                               aggregation_strategy="simple")
    windows = ours.tokenizer(LONG, truncation=True, max_length=24, stride=stride, return_overflowing_tokens=True)
    assert len(windows["input_ids"]) >= 3
    for strategy in ("simple", "first", "average", "max"):
        result = ours(LONG, aggregation_strategy=strategy, stride=stride)
        assert result and result[-1]["end"] > len(LONG) - 30  # the text's end is read, not truncated away
        assert_same_entities(result, hf(LONG, aggregation_strategy=strategy))
    both = ours([LONG, TEXTS["names"], LONG[:150]], aggregation_strategy="average", stride=stride)
    assert_same_entities(both[0], hf(LONG, aggregation_strategy="average"))
    assert_same_entities(both[2], hf(LONG[:150], aggregation_strategy="average"))


def test_tokens_of_overlapping_windows_are_kept_once_with_their_index_in_the_whole_text(ner_checkpoint):
    """transformers refuses windows without aggregation; here each token comes once, indexed in the whole text."""
    ours = bertfast.pipeline("ner", model=ner_checkpoint, max_length=24)
    whole = ours.tokenizer(LONG, return_offsets_mapping=True)
    tokens = ours(LONG, ignore_labels=[], stride=7)
    assert [t["index"] for t in tokens] == list(range(1, len(whole["input_ids"]) - 1))
    for token in tokens:
        token_id = whole["input_ids"][token["index"]]
        start, end = whole["offset_mapping"][token["index"]]
        assert (token["start"], token["end"]) == (start, end)
        expected = LONG[start:end] if token_id == ours.tokenizer.unk_token_id else \
            ours.tokenizer.convert_ids_to_tokens(token_id)
        assert token["word"] == expected
    default = ours(LONG, ignore_labels=[])  # default stride: a quarter of a window
    assert [t["index"] for t in default] == [t["index"] for t in tokens]


@pytest.mark.parametrize("call, error, match", [
    (lambda p: p("a", aggregation_strategy="longest"), ValueError, "aggregation_strategy must be one of"),
    (lambda p: p("a", ignore_labels="O"), TypeError, "ignore_labels must be a list of label names"),
    (lambda p: p("a", stride=22), ValueError, "stride=22 must be less than the 22 text tokens"),
    (lambda p: p("a", stride=-1), ValueError, "stride must be a non-negative int"),
    (lambda p: p(5), TypeError, "must be a string or a non-empty list of strings"),
    (lambda p: p([]), TypeError, "must be a string or a non-empty list of strings"),
    (lambda p: p(["a", None]), TypeError, "must be a string or a non-empty list of strings"),
], ids=["strategy", "ignore_str", "stride_too_long", "stride_negative", "int", "empty_list", "none_in_list"])
def test_bad_input_is_a_clear_error(ner_checkpoint, call, error, match):
    with pytest.raises(error, match=match):
        call(bertfast.pipeline("ner", model=ner_checkpoint, max_length=24))


def test_onnxruntime_backend_gives_the_same_entities(tmp_path_factory, ner, ner_checkpoint):
    """An export runs the padded rows, the torch model the packed ones: the same entities, windows included."""
    export_dir, _ = exported(tmp_path_factory, ner_checkpoint, "token-classification")
    onnx = bertfast.pipeline("token-classification", model=export_dir, backend="onnxruntime", max_length=24)
    torch_ner = bertfast.pipeline("token-classification", model=ner_checkpoint, max_length=24)
    assert isinstance(onnx.model, bertfast.OnnxModel)
    for text in (TEXTS["names"], TEXTS["subwords"], LONG):
        assert_same_entities(onnx(text, aggregation_strategy="simple"), torch_ner(text, aggregation_strategy="simple"))
