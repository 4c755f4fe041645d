"""What each served task takes and returns on the wire: the behaviour of the ``serving`` parts of the task table
(``bertfast.tasks``: its tensors and the names of the functions here); ``CONTRACTS`` is its lookup.

Every input is text, one UTF-8 string per batch row (Triton ``TYPE_STRING``, ``BYTES`` in the KServe v2
protocol, dims ``[1]`` so a request of N texts has shape ``[N, 1]``); tokenization happens in the server.
Outputs are tensors; a result with structure (fill-mask's propositions, entities, answers) is one JSON string
per row. An input marked ``optional`` (text-classification's ``text_pair``) may be left out of a request; the
requests of one model call then all have it or all lack it. A contract's ``run`` calls the task's pipeline
(``bertfast.pipeline(task, ...)``) on the rows of one model call and returns each output with the rows on axis 0.

Adding a served task that has a pipeline is its entry's ``serving=`` (plus its server test); the README's
"Serving" table lists the contract of every entry.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bertfast.pipelines.base import Pipeline
from bertfast.tasks import SERVED_AGGREGATION, TaskSpec, TensorSpec, get_task, load, task_names

# Triton config data types -> the numpy dtype of the arrays an entry returns (BYTES travel as object arrays)
NUMPY_TYPES = {"TYPE_STRING": np.object_, "TYPE_FP32": np.float32}


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

    @classmethod
    def of(cls, spec: TaskSpec) -> "TaskContract":
        """The contract of a table entry that has ``serving``, its functions imported."""
        serving = spec.serving
        return cls(spec.name, serving.inputs, serving.outputs, load(serving.run),
                   None if serving.check is None else load(serving.check), serving.windowed)

    @property
    def tokenized(self) -> tuple[str, ...]:
        """The inputs encoded as (text, text_pair)."""
        return tuple(spec.name for spec in self.inputs[:2])


def json_rows(results: Sequence[Any]) -> np.ndarray:
    """One JSON string per row, shaped (N, 1) as a TYPE_STRING output with dims [1]."""
    return np.array([[json.dumps(r).encode("utf-8")] for r in results], dtype=np.object_)


def embedding(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"embedding": pipe(rows["text"]).numpy()}  # (N, H) float32


def json_result(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """The pipeline's result for each text as one JSON string per row (fill-mask, sparse-embedding)."""
    return {"result": json_rows(pipe(rows["text"]))}


def has_mask(pipe: Pipeline, row: dict[str, str], ids: list[int]) -> None:
    if pipe.tokenizer.mask_token_id not in ids:
        raise ValueError(f"the text has no {pipe.tokenizer.mask_token} token: put {pipe.tokenizer.mask_token} "
                         f"where a word should be predicted")


def next_sentence(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    results = pipe(rows["text"], rows["text_pair"])
    return {"logits": np.array([r["logits"] for r in results], dtype=np.float32),
            "is_next_probability": np.array([[r["is_next_probability"]] for r in results], dtype=np.float32),
            "label": np.array([[r["label"].encode("utf-8")] for r in results], dtype=np.object_)}


def text_classification(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Every label's score in one call (``top_k`` = all labels, sorted best first); the best is the pipeline's
    default result, the same ``{label, score}`` as ``pipe(text)``."""
    config = pipe.model.config
    ranked = pipe(rows["text"], rows.get("text_pair"), top_k=config.num_labels)
    scores = np.zeros((len(ranked), config.num_labels), dtype=np.float32)
    for row, labels in enumerate(ranked):
        for item in labels:
            scores[row, config.label2id[item["label"]]] = item["score"]
    return {"scores": scores, "result": json_rows([labels[0] for labels in ranked])}


def token_classification(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"result": json_rows(pipe(rows["text"], aggregation_strategy=SERVED_AGGREGATION))}


def question_answering(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"result": json_rows(pipe(question=rows["question"], context=rows["context"]))}


def question_fits(pipe: Pipeline, row: dict[str, str], ids: list[int]) -> None:
    pipe.check_question(row["question"])


def rerank(pipe: Pipeline, rows: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {"score": np.array(pipe.score_pairs(rows["query"], rows["document"]), dtype=np.float32)[:, None]}


def served_tasks() -> list[str]:
    """The tasks that have both a pipeline and a contract."""
    return sorted(set(task_names("serving")) & set(task_names("pipeline")))


def contract_for(task: str) -> TaskContract:
    """The contract of a served task; a ValueError naming the served tasks otherwise."""
    served = served_tasks()
    if task in served:
        return TaskContract.of(get_task(task))
    if task in task_names("pipeline"):
        raise ValueError(f"task {task!r} has a pipeline but no serving contract yet (add serving= to its entry in "
                         f"bertfast/tasks.py); served tasks: {served}")
    raise ValueError(f"unknown task {task!r}; served tasks: {served}")


# task -> contract, for the served tasks: a lookup of the task table (built last: its functions are above)
CONTRACTS: dict[str, TaskContract] = {task: contract_for(task) for task in served_tasks()}
