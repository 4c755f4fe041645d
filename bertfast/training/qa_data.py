"""Question-answering fine-tuning data: SQuAD-style examples -> windows over long contexts -> start/end positions,
and SQuAD's exact-match / F1 of the best span over an example's windows.

Files: SQuAD JSON (``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}``) or JSON Lines with ``question``, ``context`` and ``answers`` (``{"text": [...],
"answer_start": [...]}`` as in HF datasets, or a list of ``{"text", "answer_start"}``). As transformers'
``run_qa.py``: the question comes first, the context is cut into windows of ``max_length`` tokens sharing
``doc_stride`` tokens, and a window that does not hold the (first) answer whole is labelled with [CLS] (position 0).
"""
from __future__ import annotations

import collections
import json
import os
import re
import string
from collections.abc import Sequence
from typing import Any

import torch

from bertfast.tokenizer import BertTokenizer
from bertfast.training.finetune_data import pad, read_rows

MAX_ANSWER_TOKENS = 30  # the longest span considered when decoding


def read_squad(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Examples {"id", "question", "context", "answers": [{"text", "answer_start"}]} of a SQuAD JSON or JSON Lines file."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith("{") and '"data"' in head[:200]:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        rows = [{"id": qa.get("id", str(i)), "question": qa["question"], "context": paragraph["context"],
                 "answers": qa.get("answers", [])}
                for article in document["data"] for paragraph in article["paragraphs"]
                for i, qa in enumerate(paragraph["qas"])]
    else:
        rows = read_rows(path)
    examples = []
    for number, row in enumerate(rows, 1):
        missing = [k for k in ("question", "context", "answers") if k not in row]
        if missing:
            raise ValueError(f"{path} example {number} has no {missing[0]!r}: each needs question, context and answers")
        answers = row["answers"]
        if isinstance(answers, dict):  # HF datasets: {"text": [...], "answer_start": [...]}
            answers = [{"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])]
        for answer in answers:
            start = int(answer["answer_start"])
            if row["context"][start:start + len(answer["text"])] != answer["text"]:
                raise ValueError(f"{path} example {number}: answer {answer['text']!r} is not at character {start} of "
                                 f"its context (answer_start counts characters from 0)")
        examples.append({"id": str(row.get("id", number)), "question": str(row["question"]),
                         "context": str(row["context"]), "answers": answers})
    return examples


class QuestionAnsweringData:
    """Examples -> windows with start/end positions -> batches for BertForQuestionAnswering."""

    def __init__(self, tokenizer: BertTokenizer, max_length: int = 384, doc_stride: int = 128) -> None:
        self.tokenizer, self.max_length, self.doc_stride = tokenizer, max_length, doc_stride

    def check_windows(self, examples: Sequence[dict], path: str | os.PathLike) -> None:
        """Each question leaves room for context tokens in a window, more than the windows share (``doc_stride``);
        the errors name the options as the command line spells them (the tokenizer's would say stride= and
        max_length=, after a panic of its Rust side)."""
        questions = self.tokenizer([e["question"] for e in examples], add_special_tokens=False,
                                   return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)  # BERT's [CLS] q [SEP] c [SEP]: 3
        for number, question in enumerate(questions, 1):
            room = self.max_length - specials - len(question)  # context tokens per window
            if room <= self.doc_stride:
                fix = ("raise --max-length or shorten the question" if room < 1 else
                       f"lower --doc-stride (doc_stride) below {room}, or raise --max-length")
                raise ValueError(f"{os.fspath(path)} example {number}: its question is {len(question)} tokens, so a "
                                 f"window of --max-length (max_length) {self.max_length} tokens holds {max(room, 0)} "
                                 f"context tokens, not more than the --doc-stride (doc_stride) {self.doc_stride} "
                                 f"that windows share: {fix}")

    def features(self, examples: Sequence[dict], path: str | os.PathLike) -> list[dict[str, Any]]:
        self.check_windows(examples, path)
        encoded = self.tokenizer([e["question"] for e in examples], [e["context"] for e in examples],
                                 truncation="only_second", max_length=self.max_length, stride=self.doc_stride,
                                 return_overflowing_tokens=True, return_offsets_mapping=True,
                                 return_token_type_ids=True)
        features = []
        for w, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
            example = examples[example_index]
            sequence_ids = encoded.sequence_ids(w)
            offsets = [o if s == 1 else None for o, s in zip(encoded["offset_mapping"][w], sequence_ids)]
            start = end = 0
            if example["answers"]:
                first = example["answers"][0]
                char_start = int(first["answer_start"])
                char_end = char_start + len(first["text"])
                inside = [i for i, o in enumerate(offsets) if o is not None]
                if inside and offsets[inside[0]][0] <= char_start and offsets[inside[-1]][1] >= char_end:
                    start = next(i for i in inside if offsets[i][1] > char_start)
                    end = max(i for i in inside if offsets[i][0] < char_end)
            features.append({"input_ids": encoded["input_ids"][w], "token_type_ids": encoded["token_type_ids"][w],
                             "start_positions": start, "end_positions": end, "example": example_index,
                             "offsets": offsets})
        return features

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features, self.tokenizer.pad_token_id)
        batch["start_positions"] = torch.tensor([f["start_positions"] for f in features])
        batch["end_positions"] = torch.tensor([f["end_positions"] for f in features])
        return batch

    def predictions(self, features: Sequence[dict], examples: Sequence[dict],
                    outputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[str]:
        """The best span of each example over its windows (start logit + end logit, start <= end <
        start + MAX_ANSWER_TOKENS, context tokens only); "" when no window has a context token."""
        start_logits = [row for s, _ in outputs for row in s]
        end_logits = [row for _, e in outputs for row in e]
        best: dict[int, tuple[float, str]] = {}
        for feature, starts, ends in zip(features, start_logits, end_logits):
            context = examples[feature["example"]]["context"]
            inside = [i for i, o in enumerate(feature["offsets"]) if o is not None]
            if not inside:
                continue
            index = torch.tensor(inside)
            score = starts[index][:, None] + ends[index][None, :]  # (N, N): start i, end j
            span = index[None, :] - index[:, None]  # end - start, in tokens
            score = score.masked_fill((span < 0) | (span >= MAX_ANSWER_TOKENS), float("-inf"))
            flat = int(score.argmax())
            i, j = inside[flat // len(inside)], inside[flat % len(inside)]
            value = float(score.flatten()[flat])
            if feature["example"] not in best or value > best[feature["example"]][0]:
                offsets = feature["offsets"]
                best[feature["example"]] = (value, context[offsets[i][0]:offsets[j][1]])
        return [best.get(e, (0.0, ""))[1] for e in range(len(examples))]

    def scores(self, features: Sequence[dict], examples: Sequence[dict],
               outputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        predicted = self.predictions(features, examples, outputs)
        exact = [max((exact_match(p, a["text"]) for a in e["answers"]), default=float(p == ""))
                 for p, e in zip(predicted, examples)]
        f1 = [max((token_f1(p, a["text"]) for a in e["answers"]), default=float(p == ""))
              for p, e in zip(predicted, examples)]
        return {"exact_match": 100 * sum(exact) / len(exact), "f1": 100 * sum(f1) / len(f1)}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if not predicted or not gold:
        return float(predicted == gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)
