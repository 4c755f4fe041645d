"""bertfast/pipelines/question_answering.py against transformers 4.x's question-answering definition, written here
as ``reference`` on transformers' BertForQuestionAnswering logits and BertTokenizerFast encodings of the same
random checkpoint (transformers 5 has no such pipeline to compare with)."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers

import bertfast
from tests.helpers import LOGITS_ATOL, exported

# A context of distinct sentences (no repeated windows, whose equal scores would tie) far longer than the
# checkpoint's 64 positions, so it is split into several windows.
LONG_CONTEXT = " ".join([
    "The old lighthouse keeper walked along the rocky shore every morning, counting gulls.",
    "In 1893 a storm destroyed the northern pier, and the village rebuilt it with oak from Norway.",
    "Children learned to swim in the cold bay while their parents mended nets beside the harbour.",
    "The bakery on Mill Street sold rye bread, cinnamon rolls and a famous plum cake on Sundays.",
    "A railway line reached the town in 1910, bringing tourists, painters and a small cinema.",
    "Today the lighthouse is a museum; its lamp still turns at night for the fishing boats.",
])
CASES: dict[str, tuple[Any, Any]] = {
    "short": ("Where is the cat?", "The cat sat on the mat in the kitchen."),
    "long": ("Who walked along the shore?", LONG_CONTEXT),
    "unicode": ("Où est le café ?", "Le café naïve de Zoë est à Tōkyō, près de 東京駅 — très célèbre."),
    "cjk": ("东京在哪里？", "東京は日本の首都です。人口は約千四百万人で、東京タワーが有名です。"),
    "no_answer": ("How many moons does Mars have?", "Café"),  # the null answer wins with handle_impossible_answer
    "no_context_tokens": ("What is it?", "\u200b\x00"),  # characters BERT drops (zero-width space, NUL): no span
}
OPTIONS = [
    {},
    {"top_k": 3},
    {"top_k": 2, "handle_impossible_answer": True},
    {"top_k": 4, "max_seq_len": 24, "doc_stride": 8, "max_answer_len": 3},
    {"top_k": 2, "max_seq_len": 32, "doc_stride": 0, "align_to_words": False},
    {"handle_impossible_answer": True, "max_answer_len": 1},
]


def _softmax(logits: torch.Tensor, allowed: list[bool]) -> torch.Tensor:
    masked = logits.double().masked_fill(~torch.tensor(allowed), float("-inf"))
    return masked.softmax(dim=-1)


def _chars(encoding: Any, start: int, end: int, align_to_words: bool) -> tuple[int, int]:
    """transformers 4.x ``get_indices``: the words of the start and end tokens, else the tokens' offsets."""
    if align_to_words:
        try:
            first, last = encoding.token_to_word(start), encoding.token_to_word(end)
            return encoding.word_to_chars(first, sequence_index=1)[0], encoding.word_to_chars(last, sequence_index=1)[1]
        except Exception:
            pass
    return encoding.offsets[start][0], encoding.offsets[end][1]


def reference(model: Any, tokenizer: Any, question: str, context: str, top_k: int = 1, doc_stride: int | None = None,
              max_answer_len: int = 15, max_seq_len: int = 64, handle_impossible_answer: bool = False,
              align_to_words: bool = True) -> Any:
    """The definition, one window at a time in float64: softmax over the context tokens and [CLS], spans of context
    tokens start <= end < start + max_answer_len by p_start x p_end, all windows ranked together; the null answer
    (min over windows of p_start[CLS] x p_end[CLS]) competes with handle_impossible_answer."""
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
    enc = tokenizer(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                    return_overflowing_tokens=True)
    candidates, nulls = [], []
    for w, ids in enumerate(enc["input_ids"]):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([enc["token_type_ids"][w]]),
                        attention_mask=torch.tensor([enc["attention_mask"][w]]))
        sequence = enc.sequence_ids(w)
        allowed = [i == 0 or s == 1 for i, s in enumerate(sequence)]
        p_start, p_end = _softmax(out.start_logits[0], allowed), _softmax(out.end_logits[0], allowed)
        nulls.append((p_start[0] * p_end[0]).item())
        for start in (i for i, s in enumerate(sequence) if s == 1):
            for end in range(start, min(start + max_answer_len, len(ids))):
                if sequence[end] == 1:
                    candidates.append(((p_start[start] * p_end[end]).item(), w, start, end))
    candidates.sort(key=lambda c: c[0], reverse=True)
    answers = []
    for score, w, start, end in candidates[:top_k]:
        first, last = _chars(enc.encodings[w], start, end, align_to_words)
        answers.append({"score": score, "start": first, "end": last, "answer": context[first:last]})
    if handle_impossible_answer:
        answers.append({"score": min(nulls), "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
    return answers[0] if len(answers) == 1 else answers


def score_diff(ours: Any, expected: Any) -> float:
    """Identical answers (text and offsets), in the same shape; returns the largest score difference."""
    assert isinstance(ours, dict) == isinstance(expected, dict), (ours, expected)
    ours, expected = ([ours], [expected]) if isinstance(expected, dict) else (ours, expected)
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [(a["answer"], a["start"], a["end"])
                                                                   for a in expected]
    return max((abs(a["score"] - b["score"]) for a, b in zip(ours, expected)), default=0.0)


@pytest.fixture(scope="module")
def hf(qa_checkpoint):
    model = transformers.BertForQuestionAnswering.from_pretrained(qa_checkpoint, attn_implementation="eager").eval()
    return model, transformers.BertTokenizerFast.from_pretrained(qa_checkpoint)


@pytest.fixture(scope="module")
def qa(qa_checkpoint):
    return bertfast.pipeline("question-answering", model=qa_checkpoint)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_answers_match_the_reference(qa, hf, options):
    worst = 0.0
    for name, (question, context) in CASES.items():
        expected = reference(*hf, question, context, **options)
        worst = max(worst, score_diff(qa(question, context, **options), expected))
        for answer in expected if isinstance(expected, list) else [expected]:
            assert answer["answer"] == context[answer["start"]:answer["end"]]
    assert worst <= LOGITS_ATOL


def test_the_inputs_exercise_windows_and_the_null_answer(qa, hf):
    """The cases do what they are there for: the long context has several windows and answers from more than one;
    the null answer wins where expected and only with handle_impossible_answer."""
    model, tokenizer = hf
    question, context = CASES["long"]
    windows = tokenizer(question, context, truncation="only_second", max_length=24, stride=8,
                        return_overflowing_tokens=True)["input_ids"]
    assert len(windows) > 10 and len(tokenizer(context)["input_ids"]) > 64
    answers = qa(question, context, top_k=20, max_seq_len=24, doc_stride=8)
    assert len({a["start"] // 100 for a in answers}) > 2  # spread over the context
    assert reference(model, tokenizer, *CASES["no_answer"], handle_impossible_answer=True)["answer"] == ""
    null = qa(*CASES["no_answer"], handle_impossible_answer=True)
    assert (null["answer"], null["start"], null["end"]) == ("", 0, 0) and null["score"] > 0.5
    assert qa(*CASES["no_answer"])["answer"] == "Café"
    assert qa(*CASES["no_context_tokens"]) == []
    assert qa(*CASES["no_context_tokens"], handle_impossible_answer=True) == {"score": 1.0, "start": 0, "end": 0,
                                                                              "answer": ""}


def test_every_input_form_and_batch_size_gives_the_same_answers(qa, qa_checkpoint):
    questions = [q for q, _ in CASES.values()]
    contexts = [c for _, c in CASES.values()]
    one_by_one = [qa(q, c, top_k=2) for q, c in zip(questions, contexts)]
    assert qa(questions, contexts, top_k=2) == one_by_one
    assert qa([{"question": q, "context": c} for q, c in zip(questions, contexts)], top_k=2) == one_by_one
    assert qa({"question": questions[0], "context": contexts[0]}, top_k=2) == one_by_one[0]
    assert qa(question=questions[:2], context=LONG_CONTEXT) == [qa(q, LONG_CONTEXT) for q in questions[:2]]
    small_batches = bertfast.pipeline("question-answering", model=qa_checkpoint, batch_size=3)
    assert len(set(map(len, one_by_one))) > 1  # examples of 2, 1 (a dict: 4 keys) and no answers
    assert max(map(score_diff, small_batches(questions, contexts, top_k=2), one_by_one)) <= 1e-6


def test_onnxruntime_backend_gives_the_same_answers(tmp_path_factory, qa, qa_checkpoint):
    export_dir, _ = exported(tmp_path_factory, qa_checkpoint, "question-answering")
    onnx = bertfast.pipeline("question-answering", model=export_dir, backend="onnxruntime")
    for question, context in list(CASES.values())[:3]:
        assert score_diff(onnx(question, context, top_k=3), qa(question, context, top_k=3)) <= LOGITS_ATOL


BAD_INPUTS = {
    "empty_context": (("Where?", ""), {}, ValueError, "context 0 is empty"),
    "empty_question": (("", "Paris."), {}, ValueError, "question 0 is empty"),
    "whitespace_context": (("Where?", " \t\n "), {}, ValueError, r"context 0 is empty \(whitespace only\)"),
    "whitespace_question": ((" ", "Paris."), {}, ValueError, r"question 0 is empty \(whitespace only\)"),
    "long_question": ((" ".join(["why"] * 70), "Paris."), {}, ValueError, "70 tokens, more than max_question_len=64"),
    "question_longer_than_the_model": ((" ".join(["why"] * 70), "Paris."), {"max_question_len": 100}, ValueError,
                                       "no context token fits"),
    "top_k_0": (("Where?", "Paris."), {"top_k": 0}, ValueError, "top_k must be a positive integer, got 0"),
    "max_answer_len_0": (("Where?", "Paris."), {"max_answer_len": 0}, ValueError, "max_answer_len must be a positive"),
    "doc_stride_too_long": (("Where?", "Paris."), {"max_seq_len": 16, "doc_stride": 16}, ValueError,
                            r"doc_stride \(16\) must be .* smaller than max_seq_len \(16\)"),
    "doc_stride_beside_question": (("Where is the cat now?", "Paris."), {"max_seq_len": 16, "doc_stride": 9},
                                   ValueError, "smaller than the 7 context tokens a window holds"),
    "max_seq_len_above_the_model": (("Where?", "Paris."), {"max_seq_len": 65}, ValueError, "from 5 to 64"),
    "unequal_lists": ((["a?", "b?"], ["x"]), {}, ValueError, "2 questions but 1 contexts"),
    "dict_without_context": (([{"question": "a?"}],), {}, ValueError, "lacks a 'question' or 'context' key"),
    "number_context": (("a?", 5), {}, TypeError, "pass question= and context= as strings"),
    "number_in_list": ((["a?"], [5]), {}, TypeError, "context 0 must be a string"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_a_clear_error(qa, name):
    args, kwargs, error, match = BAD_INPUTS[name]
    with pytest.raises(error, match=match):
        qa(*args, **kwargs)
