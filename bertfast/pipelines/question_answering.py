"""``question-answering``: the span of a context that answers a question, as transformers 4.x's
QuestionAnsweringPipeline defines it (transformers 5 removed the pipeline).

The question goes first, the context second. A context longer than one window is split into windows over the
context only, the question repeated in each, consecutive windows sharing ``doc_stride`` context tokens. In each
window the start logits and the end logits each go through a softmax over the context tokens and [CLS] (every
other token masked out); a span of context tokens scores p_start[start] x p_end[end], with start <= end <
start + ``max_answer_len``; [CLS] counts only as the null answer ("no answer in this context"). The spans of all
windows are ranked together; with ``handle_impossible_answer`` the null answer, scored by the smallest
p_start[CLS] x p_end[CLS] over the windows, competes with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Encoding

from bertfast.encoding import BatchEncoding
from bertfast.export.onnx_model import OnnxModel
from bertfast.heads.tasks import BertForQuestionAnswering
from bertfast.padding import PackedBatch
from bertfast.pipelines.base import Pipeline

DEFAULT_MAX_SEQ_LEN = 384  # transformers' window length, when the model takes that many tokens
DEFAULT_MAX_DOC_STRIDE = 128  # ... and its overlap: min(max_seq_len // 2, 128)
DEFAULT_MAX_QUESTION_LEN = 64  # question tokens, as transformers
CONTEXT = 1  # the sequence id of the context's tokens
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
NO_SPAN = -1.0  # the score of a (start, end) that is not an allowed span: below every probability

Answer = dict[str, Any]  # {"score": float, "start": int, "end": int, "answer": str}


@dataclass(frozen=True)
class WindowSpans:
    """What one window contributes: its best spans (token positions) and its null-answer score."""

    spans: list[tuple[float, int, int]]  # (p_start x p_end, start token, end token), best first
    null_score: float  # p_start[CLS] x p_end[CLS]


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, context: torch.Tensor, top_k: int,
               max_answer_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``top_k`` best spans of each window, on the logits' device (no host sync).

    start_logits, end_logits (B, S): a window per row, [CLS] at position 0. context (B, S) bool: the tokens an
    answer may cover. Returns scores, starts, ends, each (B, k) with k = min(top_k, S * L), L = min(max_answer_len,
    S) (score NO_SPAN where a window has fewer than k spans), and null_scores (B,). Only (B, S, L) scores are formed.
    """
    batch, seq_len = start_logits.shape
    allowed = context.clone()
    allowed[:, 0] = True  # [CLS]: in the softmax, so that the null answer has a probability
    p_start = start_logits.float().masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # (B, S)
    p_end = end_logits.float().masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # (B, S)
    null_scores = p_start[:, 0] * p_end[:, 0]  # (B,)
    width = min(max_answer_len, seq_len)
    ends = F.pad(p_end, (0, width - 1)).unfold(1, width, 1)  # (B, S, L): [b, s, l] = p_end[b, s + l]
    end_in_context = F.pad(context, (0, width - 1)).unfold(1, width, 1)  # (B, S, L)
    scores = p_start[:, :, None] * ends  # (B, S, L)
    scores = scores.masked_fill(~(context[:, :, None] & end_in_context), NO_SPAN).view(batch, seq_len * width)
    top, flat = scores.topk(min(top_k, seq_len * width), dim=1)  # (B, k)
    starts = flat // width
    return top, starts, starts + flat % width, null_scores


def char_span(encoding: Encoding, start: int, end: int, align_to_words: bool) -> tuple[int, int]:
    """Context characters [first, last) of the tokens start..end; with ``align_to_words`` widened to whole words
    (the word of the start token, the word of the end token), as transformers does."""
    if align_to_words:
        first, last = encoding.token_to_word(start), encoding.token_to_word(end)
        if first is not None and last is not None:
            first_chars, last_chars = encoding.word_to_chars(first, CONTEXT), encoding.word_to_chars(last, CONTEXT)
            if first_chars is not None and last_chars is not None:
                return first_chars[0], last_chars[1]
    return encoding.offsets[start][0], encoding.offsets[end][1]


def _examples(question: Any, context: Any) -> tuple[list[tuple[str, str]], bool]:
    """(question, context) pairs from transformers' input forms, and whether a single example was given."""
    single = isinstance(question, dict) or (isinstance(question, str) and isinstance(context, str))
    if isinstance(question, dict):
        question = [question]
    if isinstance(question, (list, tuple)) and question and all(isinstance(q, dict) for q in question):
        if context is not None:
            raise TypeError("pass either {'question': ..., 'context': ...} dicts or question= and context=, not both")
        missing = [i for i, q in enumerate(question) if not {"question", "context"} <= set(q)]
        if missing:
            raise ValueError(f"input {missing[0]} lacks a 'question' or 'context' key: each dict needs both")
        pairs = [(q["question"], q["context"]) for q in question]
    elif isinstance(question, (list, tuple)) and isinstance(context, str):
        pairs = [(q, context) for q in question]  # one context for every question
    elif isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
        if len(question) != len(context):
            raise ValueError(f"got {len(question)} questions but {len(context)} contexts; they pair up one to one")
        pairs = list(zip(question, context))
    elif isinstance(question, str) and isinstance(context, str):
        pairs = [(question, context)]
    else:
        raise TypeError("pass question= and context= as strings or lists of strings, or a list of "
                        f"{{'question': ..., 'context': ...}} dicts; got {type(question).__name__} and "
                        f"{type(context).__name__}")
    if not pairs:
        raise ValueError("no questions given: pass at least one question and context")
    for i, pair in enumerate(pairs):
        for name, text in zip(("question", "context"), pair):
            if not isinstance(text, str):
                raise TypeError(f"{name} {i} must be a string, got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"{name} {i} is empty ({'zero characters' if not text else 'whitespace only'}): the "
                                 f"answer is a span of the context, so pass a non-empty question and the text to find "
                                 f"its answer in")
    return pairs, single


def _positive(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class QuestionAnsweringPipeline(Pipeline):
    model_class = BertForQuestionAnswering

    def __call__(self, question: Any = None, context: str | Sequence[str] | None = None, *, top_k: int = 1,
                 doc_stride: int | None = None, max_answer_len: int = 15, max_seq_len: int | None = None,
                 max_question_len: int = DEFAULT_MAX_QUESTION_LEN, handle_impossible_answer: bool = False,
                 align_to_words: bool = True) -> Answer | list[Answer] | list[Answer | list[Answer]]:
        """Answer ``question`` from ``context``: strings, lists of strings (one context may serve many questions),
        or a list of {"question", "context"} dicts.

        Each example gives its ``top_k`` best answers {"score", "start", "end", "answer"}, where ``answer ==
        context[start:end]`` (characters), best first: the answer itself when there is exactly one, as transformers
        does, else a list. A single example gives its result, a list of examples a list of results.
        ``max_seq_len``: tokens per window (default min(384, the model's maximum)); ``doc_stride``: context tokens
        shared by consecutive windows (default min(max_seq_len // 2, 128)); a question longer than
        ``max_question_len`` tokens, or too long to leave room for the context, is an error (never truncated).
        ``handle_impossible_answer``: the null answer {"start": 0, "end": 0, "answer": ""} competes.
        ``align_to_words``: answers cover whole words (else exactly the answer's tokens).
        """
        examples, single = _examples(question, context)
        top_k, max_answer_len = _positive("top_k", top_k), _positive("max_answer_len", max_answer_len)
        max_seq_len, doc_stride = self._windows(max_seq_len, doc_stride)
        questions, contexts = [q for q, _ in examples], [c for _, c in examples]
        self._check_questions(questions, max_seq_len, doc_stride, _positive("max_question_len", max_question_len))
        encoding = self.tokenizer(questions, contexts, padding=True, truncation="only_second", max_length=max_seq_len,
                                  stride=doc_stride, return_overflowing_tokens=True, return_tensors="pt",
                                  return_token_type_ids=True)
        windows = self._window_spans(encoding, top_k, max_answer_len)
        sample = encoding["overflow_to_sample_mapping"].tolist()
        results = [self._answers([w for w, s in enumerate(sample) if s == i], windows, encoding, text,
                                 top_k, handle_impossible_answer, align_to_words)
                   for i, text in enumerate(contexts)]
        return results[0] if single else results

    def _windows(self, max_seq_len: int | None, doc_stride: int | None) -> tuple[int, int]:
        """The window length and overlap: transformers' defaults, checked against the model."""
        if max_seq_len is None:
            max_seq_len = min(DEFAULT_MAX_SEQ_LEN, self.max_length)
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)  # BERT's [CLS] q [SEP] c [SEP]: 3
        if not isinstance(max_seq_len, int) or not specials + 2 <= max_seq_len <= self.max_length:
            raise ValueError(f"max_seq_len must be an integer from {specials + 2} to {self.max_length} "
                             f"(the model's maximum), got {max_seq_len!r}")
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, DEFAULT_MAX_DOC_STRIDE)
        if not isinstance(doc_stride, int) or isinstance(doc_stride, bool) or not 0 <= doc_stride < max_seq_len:
            raise ValueError(f"doc_stride ({doc_stride!r}) must be an integer >= 0 and smaller than max_seq_len "
                             f"({max_seq_len}): it is how many context tokens consecutive windows share")
        return max_seq_len, doc_stride

    def check_question(self, question: str, max_seq_len: int | None = None, doc_stride: int | None = None,
                       max_question_len: int = DEFAULT_MAX_QUESTION_LEN) -> None:
        """The ValueError a call with this question and these options would raise, before any model call."""
        self._check_questions([question], *self._windows(max_seq_len, doc_stride), max_question_len)

    def _check_questions(self, questions: list[str], max_seq_len: int, doc_stride: int, max_question_len: int) -> None:
        """Every question fits a window with room for the context, and windows can advance (errors, never a
        silent truncation)."""
        lengths = [len(ids) for ids in self.tokenizer(questions, add_special_tokens=False)["input_ids"]]
        for i, length in enumerate(lengths):
            room = max_seq_len - self.tokenizer.num_special_tokens_to_add(pair=True) - length  # context per window
            if length > max_question_len:
                raise ValueError(f"question {i} has {length} tokens, more than max_question_len={max_question_len}: "
                                 f"shorten it, or pass max_question_len={length} if it fits the window")
            if room < 1:
                raise ValueError(f"question {i} has {length} tokens: with max_seq_len={max_seq_len} (the model takes "
                                 f"at most {self.max_length}) no context token fits beside it; shorten the question")
            if doc_stride >= room:
                raise ValueError(f"doc_stride={doc_stride} must be smaller than the {room} context tokens a window "
                                 f"holds beside question {i} ({length} tokens): lower doc_stride, shorten the "
                                 f"question or raise max_seq_len")

    def _window_spans(self, encoding: BatchEncoding, top_k: int, max_answer_len: int) -> list[WindowSpans]:
        """Every window through the model in length-sorted batches: its best spans and null score."""
        rows = len(encoding["input_ids"])
        context = torch.tensor([[s == CONTEXT for s in encoding.sequence_ids(i)] for i in range(rows)])  # (W, S)
        lengths = encoding["attention_mask"].sum(dim=1)  # (W,)
        order = torch.argsort(lengths, descending=True, stable=True).tolist()
        windows: list[WindowSpans | None] = [None] * rows
        with torch.inference_mode():
            for first in range(0, rows, self.batch_size):
                index = order[first:first + self.batch_size]
                width = int(lengths[index[0]])  # right padding: the batch's columns beyond its longest are padding
                batch = {k: encoding[k][index, :width] for k in MODEL_INPUTS}  # each (b, width), on the host
                start_logits, end_logits = self._logits(batch, lengths[index].tolist())
                found = best_spans(start_logits, end_logits, context[index, :width].to(self.model.device), top_k,
                                   max_answer_len)
                top, starts, ends, null = (t.double() for t in found)
                for i, row in zip(index, torch.cat([top, starts, ends, null[:, None]], dim=1).tolist()):
                    k = len(row) // 3
                    spans = [(s, int(b), int(e)) for s, b, e in zip(row[:k], row[k:2 * k], row[2 * k:3 * k])
                             if s != NO_SPAN]
                    windows[i] = WindowSpans(spans, row[-1])
        return windows

    def _logits(self, batch: dict[str, torch.Tensor], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """start and end logits (b, width) of a padded batch of windows (host tensors): a bertfast model runs their
        real tokens packed (the padding positions, which no answer covers, are left 0), an export the padded
        tensors."""
        if isinstance(self.model, OnnxModel):
            out = self.model(**{k: v.to(self.model.device) for k, v in batch.items()})
            return out.start_logits, out.end_logits
        ids, types = ([row[:n] for row, n in zip(batch[key].tolist(), lengths)]
                      for key in ("input_ids", "token_type_ids"))
        out = self.model(PackedBatch.from_token_lists(ids, types, device=self.model.device))  # each (T,)
        real = batch["attention_mask"].bool().to(self.model.device)  # (b, width), True where a token is real
        return tuple(logits.new_zeros(real.shape).masked_scatter_(real, logits)  # row-major: the packed order
                     for logits in (out.start_logits, out.end_logits))

    @staticmethod
    def _answers(rows: list[int], windows: list[WindowSpans], encoding: BatchEncoding, context: str, top_k: int,
                 handle_impossible_answer: bool, align_to_words: bool) -> Answer | list[Answer]:
        """One example's answers from its windows ``rows``: ranked together, the null answer among them if asked."""
        ranked = sorted(((score, w, start, end) for w in rows for score, start, end in windows[w].spans),
                        key=lambda c: c[0], reverse=True)  # stable: ties keep window order
        answers = []
        for score, w, start, end in ranked[:top_k]:
            first, last = char_span(encoding.encodings[w], start, end, align_to_words)
            answers.append({"score": score, "start": first, "end": last, "answer": context[first:last]})
        if handle_impossible_answer:
            null = min(windows[w].null_score for w in rows)
            answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
            answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers
