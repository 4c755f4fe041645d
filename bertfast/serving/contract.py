"""What each served task takes and returns on the wire: one table entry per task (``CONTRACTS``).

Every input is text, one UTF-8 string per batch row (Triton ``TYPE_STRING``, ``BYTES`` in the KServe v2
protocol, dims ``[1]`` so a request of N texts has shape ``[N, 1]``); tokenization happens in the server.
Outputs are tensors; a result with structure (fill-mask's propositions, entities, answers) is one JSON string
per row. An input marked ``optional`` (text-classification's ``text_pair``) may be left out of a request; the
requests of one model call then all have it or all lack it. An entry's ``run`` calls the task's pipeline
(``bertfast.pipeline(task, ...)``, the ``PIPELINES`` registry) on the rows of one model call and returns each
output with the rows on axis 0.

Adding a task that has a pipeline is one entry here (plus its server test); the README's "Serving" table
lists the contract of every entry.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bertfast.config import BertConfig
from bertfast.pipelines import PIPELINES
from bertfast.pipelines.base import Pipeline

# Triton config data types -> the numpy dtype of the arrays an entry returns (BYTES travel as object arrays)
NUMPY_TYPES = {"TYPE_STRING": np.object_, "TYPE_FP32": np.float32}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served task, per batch row."""

    name: str
    data_type: str  # a key of NUMPY_TYPES (Triton's config type)
    dims: tuple[int | str, ...]  # per-row dims; a str names the BertConfig field that gives the size
    doc: str  # what a row holds: written into the model config's parameters and the README
    optional: bool = False  # an input a request may leave out

    def resolved_dims(self, config: BertConfig) -> list[int]:
        return [getattr(config, d) if isinstance(d, str) else d for d in self.dims]


@dataclass(frozen=True)
class TaskContract:
    """A served task: its tensors, the pipeline call behind them and an optional per-row check."""

    task: str  # the bertfast.pipeline task name
    inputs: tuple[TensorSpec, ...]  # the first one or two are tokenized together (text, text pair)
    outputs: tuple[TensorSpec, ...]
    run: Callable[[Pipeline, dict[str, list[str]]], dict[str, np.ndarray]]  # rows -> {output: (N, *dims)}
    # one row's texts (input name -> text) and its token ids; a ValueError refuses the request
    check: Callable[[Pipeline, dict[str, str], list[int]], None] | None = None
    windowed: bool = False  # the pipeline runs a text over max_length tokens in windows, so a row may be longer

    @property
    def tokenized(self) -> tuple[str, ...]:
        """The inputs encoded as (text, text_pair)."""
        return tuple(spec.name for spec in self.inputs[:2])


def json_rows(results: Sequence[Any]) -> np.ndarray:
    """One JSON string per row, shaped (N, 1) as a TYPE_STRING output with dims [1]."""
    return np.array([[json.dumps(r).encode("utf-8")] for r in results], dtype=np.object_)


def _feature_extraction(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"embedding": pipe(rows["text"]).numpy()}  # (N, H) float32


def _json_result(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """The pipeline's result for each text as one JSON string per row (fill-mask, sparse-embedding)."""
    return {"result": json_rows(pipe(rows["text"]))}


def _has_mask(pipe: Pipeline, row: dict[str, str], ids: list[int]) -> None:
    if pipe.tokenizer.mask_token_id not in ids:
        raise ValueError(f"the text has no {pipe.tokenizer.mask_token} token: put {pipe.tokenizer.mask_token} "
                         f"where a word should be predicted")


def _next_sentence(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    results = pipe(rows["text"], rows["text_pair"])
    return {"logits": np.array([r["logits"] for r in results], dtype=np.float32),
            "is_next_probability": np.array([[r["is_next_probability"]] for r in results], dtype=np.float32),
            "label": np.array([[r["label"].encode("utf-8")] for r in results], dtype=np.object_)}


def _text_classification(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Every label's score in one call (``top_k`` = all labels, sorted best first); the best is the pipeline's
    default result, the same ``{label, score}`` as ``pipe(text)``."""
    config = pipe.model.config
    ranked = pipe(rows["text"], rows.get("text_pair"), top_k=config.num_labels)
    scores = np.zeros((len(ranked), config.num_labels), dtype=np.float32)
    for row, labels in enumerate(ranked):
        for item in labels:
            scores[row, config.label2id[item["label"]]] = item["score"]
    return {"scores": scores, "result": json_rows([labels[0] for labels in ranked])}


def _token_classification(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"result": json_rows(pipe(rows["text"], aggregation_strategy=SERVED_AGGREGATION))}


def _question_answering(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"result": json_rows(pipe(question=rows["question"], context=rows["context"]))}


def _question_fits(pipe: Pipeline, row: dict[str, str], ids: list[int]) -> None:
    pipe.check_question(row["question"])


def _rerank(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"score": np.array(pipe.score_pairs(rows["query"], rows["document"]), dtype=np.float32)[:, None]}


SERVED_AGGREGATION = "simple"  # token-classification's entities: adjacent tokens of one entity grouped
TEXT = TensorSpec("text", "TYPE_STRING", (1,), "one UTF-8 text per row")
EMBEDDING = TensorSpec("embedding", "TYPE_FP32", ("hidden_size",), "the sentence embedding (the pipeline's pooling)")

CONTRACTS: dict[str, TaskContract] = {c.task: c for c in (
    TaskContract("feature-extraction", (TEXT,), (EMBEDDING,), _feature_extraction),
    TaskContract("sentence-embedding", (TEXT,), (EMBEDDING,), _feature_extraction),
    TaskContract("sparse-embedding", (TEXT,), (
        TensorSpec("result", "TYPE_STRING", (1,), "JSON: [{index, value}], the token ids of non-zero weight and "
                                                  "their weights, largest first"),),
        _json_result),
    TaskContract("fill-mask", (TensorSpec("text", "TYPE_STRING", (1,), "one UTF-8 text with [MASK] per row"),), (
        TensorSpec("result", "TYPE_STRING", (1,), "JSON: the top-5 [{score, token, token_str, sequence}], a list "
                                                  "of such lists when the text holds several [MASK]s"),),
        _json_result, _has_mask),
    TaskContract("next-sentence", (TEXT, TensorSpec("text_pair", "TYPE_STRING", (1,), "the text that may follow")), (
        TensorSpec("logits", "TYPE_FP32", (2,), "[is_next, not_next] logits"),
        TensorSpec("is_next_probability", "TYPE_FP32", (1,), "P(text_pair follows text)"),
        TensorSpec("label", "TYPE_STRING", (1,), "IsNext or NotNext")),
        _next_sentence),
    TaskContract("text-classification", (TEXT, TensorSpec("text_pair", "TYPE_STRING", (1,),
                                                           "optional: the second text of a pair", optional=True)), (
        TensorSpec("scores", "TYPE_FP32", ("num_labels",), "every label's score in label-id order (the pipeline's "
                                                          "function: softmax, sigmoid or none)"),
        TensorSpec("result", "TYPE_STRING", (1,), "JSON: {label, score}, the best label")),
        _text_classification),
    TaskContract("token-classification", (TEXT,), (
        TensorSpec("result", "TYPE_STRING", (1,), "JSON: [{entity_group, score, word, start, end}] (aggregation "
                                                  f"{SERVED_AGGREGATION!r}; start/end are character offsets)"),),
        _token_classification, windowed=True),
    TaskContract("question-answering", (
        TensorSpec("question", "TYPE_STRING", (1,), "one UTF-8 question per row"),
        TensorSpec("context", "TYPE_STRING", (1,), "the text that holds the answer (long ones run in windows)")), (
        TensorSpec("result", "TYPE_STRING", (1,), "JSON: {score, start, end, answer}, answer == "
                                                  "context[start:end]"),),
        _question_answering, _question_fits, windowed=True),
    TaskContract("rerank", (
        TensorSpec("query", "TYPE_STRING", (1,), "the query of the row's pair"),
        TensorSpec("document", "TYPE_STRING", (1,), "the document scored against it")), (
        TensorSpec("score", "TYPE_FP32", (1,), "the cross-encoder's score of (query, document), the pipeline's "
                                               "function applied"),),
        _rerank),
)}


def served_tasks() -> list[str]:
    """The tasks that have both a pipeline and a contract."""
    return sorted(set(CONTRACTS) & set(PIPELINES))


def contract_for(task: str) -> TaskContract:
    """The contract of a served task; a ValueError naming the served tasks otherwise."""
    served = served_tasks()
    if task in served:
        return CONTRACTS[task]
    if task in PIPELINES:
        raise ValueError(f"task {task!r} has a pipeline but no serving contract yet (add its entry to CONTRACTS in "
                         f"bertfast/serving/contract.py); served tasks: {served}")
    raise ValueError(f"unknown task {task!r}; served tasks: {served}")
