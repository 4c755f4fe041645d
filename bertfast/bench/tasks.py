"""What ``bertfast bench --task`` measures: each task's model class (bertfast's, and transformers' class of the same
name), the inputs it takes, and the output compared with transformers and timed.

feature-extraction (the default) measures BertModel's ``last_hidden_state``; the task heads measure their outputs
as the export contract names them (the task table, bertfast.tasks): text-classification ``logits``
(B, num_labels), token-classification ``logits`` (B, S, num_labels), question-answering ``start_logits`` and
``end_logits`` (stacked: (B, S, 2)), multiple-choice ``logits``, for which a workload's B sequences are the choices
of one example: inputs (1, B, S), logits (1, B).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from bertfast.bench.options import DEFAULT_TASK, GRID_TASKS
from bertfast.models.bert import BertModel
from bertfast.models.registry import architecture_of
from bertfast.pretrained import BertPreTrainedModel
from bertfast.tasks import get_task

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BenchTask:
    name: str  # a --task value
    model_class: type[BertPreTrainedModel]  # bertfast's; transformers has a class of the same name
    fields: tuple[str, ...]  # the output fields compared and timed, stacked on a last axis when several
    per_token: bool  # the output has a sequence axis, (B, S, ...): compared at real tokens only
    choices: bool  # the model takes (B, num_choices, S) inputs

    def inputs(self, batch: Batch) -> Batch:
        """A workload's (B, S) inputs as this task's model takes them: (1, B, S) for multiple choice."""
        return {k: v[None] for k, v in batch.items()} if self.choices else batch

    def select(self, output: Any) -> torch.Tensor:
        """The compared output of a model call (bertfast's, transformers' or OnnxModel's output object)."""
        values = [torch.as_tensor(getattr(output, name)) for name in self.fields]
        return values[0] if len(values) == 1 else torch.stack(values, dim=-1)  # e.g. (B, S, 2)

    def describe(self, config: Any = None) -> str:
        """One line: the task, the class that runs it (``config``'s architecture's own, where given), the fields."""
        model_class = self.model_class
        if config is not None:
            model_class = architecture_of(config).model_class(model_class.role, model_class)
        return f"task {self.name}: {model_class.__name__}, {' and '.join(self.fields)} compared and timed"


def bench_task(name: str = DEFAULT_TASK) -> BenchTask:
    """The BenchTask of a --task value."""
    if name not in GRID_TASKS:
        raise ValueError(f"unknown task {name!r}; bench measures {', '.join(GRID_TASKS)} on the provider grid")
    spec = get_task(name)
    per_token = spec.export.outputs[spec.bench[0]][0] == "sequence_length"
    return BenchTask(name, spec.model_class, spec.bench, per_token, choices="num_choices" in spec.export.inputs)


def task_checkpoint(model_dir: str, scratch: str, task: BenchTask) -> str:
    """The checkpoint every provider loads for ``task``: ``model_dir`` itself for feature-extraction; otherwise the
    task model built from it -- the head the checkpoint has, or a random one, as speed does not depend on the
    values -- saved under ``scratch``, so that every provider runs the same weights."""
    if task.model_class is BertModel:
        return model_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "initialised ... randomly": expected for a checkpoint without the head
        model = task.model_class.from_pretrained(model_dir, local_files_only=True, allow_missing_weights=True)
    directory = os.path.join(scratch, task.name)
    model.save_pretrained(directory)
    return directory
