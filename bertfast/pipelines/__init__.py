"""``bertfast.pipeline(task, model=...)``: pipelines shaped like transformers', one module per task."""
from __future__ import annotations

import os
from typing import Any

import torch

from bertfast.config import resolve_dtype
from bertfast.export.onnx_model import OnnxModel
from bertfast.device import resolve_device
from bertfast.pretrained import BertPreTrainedModel
from bertfast.pipelines.base import Pipeline
from bertfast.tasks import ALIASES, get_task, load, task_names  # ALIASES: the old name, re-exported
from bertfast.auto_tokenizer import AutoTokenizer
from bertfast.tokenizer_base import TokenizerBase

DEFAULT_MODEL = "bert-base-uncased"
PIPELINE_BACKENDS = ("torch", "onnxruntime")  # what runs a pipeline's model (not ops.BACKENDS)


def pipeline_class(task: str) -> type[Pipeline]:
    """The pipeline class of a task name or alias (the table's ``pipeline`` entry, imported now)."""
    return load(get_task(task, "pipeline").pipeline)


# task -> pipeline class: a lookup of the task table, kept for code that reads this registry
PIPELINES: dict[str, type[Pipeline]] = {task: pipeline_class(task) for task in task_names("pipeline")}
# The export task (``export_onnx(task=...)``) whose graph a task runs with backend="onnxruntime", where it differs.
ONNX_TASKS = {task: spec.export_task for task in task_names("pipeline")
              if (spec := get_task(task)).export_task != task}


def pipeline(task: str, model: str | os.PathLike | BertPreTrainedModel | OnnxModel = DEFAULT_MODEL,
             tokenizer: str | os.PathLike | TokenizerBase | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype | str = torch.float32, batch_size: int = 32, backend: str = "torch",
             max_length: int | None = None, **load_kwargs: Any) -> Pipeline:
    """Build a pipeline: ``pipeline("fill-mask", model="bert-base-uncased")`` (the tasks are ``PIPELINES``'
    keys, and transformers' names in ``ALIASES``; both from ``bertfast.tasks``). ``model`` is a checkpoint
    (directory or hub id) or a loaded bertfast model; ``tokenizer`` defaults to the checkpoint's. ``batch_size``
    texts go through the model at a time, each truncated to ``max_length`` tokens (default: the tokenizer's
    ``model_max_length``, capped at the model's maximum; a sentence-transformers folder's ``max_seq_length``). ``load_kwargs`` go to ``from_pretrained`` (e.g. ``adapter="peft-dir"``).

    The model folder's task options are read too (for "feature-extraction" / "sentence-embedding" and
    "sparse-embedding": its sentence-transformers configuration); with an already loaded model, from the
    ``tokenizer`` folder when that is a path.

    ``backend="onnxruntime"`` runs an export of the same task instead (``bertfast export-onnx``): ``model`` is
    its directory, its .onnx file or an ``OnnxModel``; ``device`` "cuda" picks the CUDA execution provider;
    ``load_kwargs`` go to ``OnnxModel``; the dtype was fixed at export (``--fp16``). The task options are read
    from the export's folder, where an export of a sentence-transformers folder carries its configuration
    (``bertfast.export.sentence``): the embedding pipelines give the same vectors on either backend.
    """
    spec = get_task(task, "pipeline")
    task, cls = spec.name, PIPELINES[spec.name]
    if backend not in PIPELINE_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {PIPELINE_BACKENDS}")
    device = resolve_device(device)  # before anything is loaded
    if backend == "onnxruntime" or isinstance(model, OnnxModel):
        return _onnx_pipeline(task, model, tokenizer, device, dtype, batch_size, max_length, **load_kwargs)
    if isinstance(model, BertPreTrainedModel):
        if tokenizer is None:
            raise ValueError("pass tokenizer= (a path or a tokenizer) together with an already loaded model")
        folder = None if isinstance(tokenizer, TokenizerBase) else tokenizer
    else:
        folder, tokenizer = model, model if tokenizer is None else tokenizer
    options = {} if folder is None else cls.folder_options(folder, load_kwargs.get("local_files_only", False))
    loaded = model if isinstance(model, BertPreTrainedModel) else spec.model_class.from_pretrained(
        model, dtype=resolve_dtype(dtype), device=device, **load_kwargs)
    if not isinstance(loaded, spec.model_class):
        raise TypeError(f"task {task!r} needs a {spec.model_class.__name__}, got {type(loaded).__name__}")
    return cls(loaded, _as_tokenizer(tokenizer), batch_size=batch_size, max_length=max_length, **options)


def _as_tokenizer(tokenizer: str | os.PathLike | TokenizerBase) -> TokenizerBase:
    """A loaded tokenizer as it is; a folder's through AutoTokenizer (BertTokenizer for a BERT folder)."""
    return tokenizer if isinstance(tokenizer, TokenizerBase) else AutoTokenizer.from_pretrained(tokenizer)


def _onnx_pipeline(task: str, model: str | os.PathLike | OnnxModel,
                   tokenizer: str | os.PathLike | TokenizerBase | None, device: torch.device | str,
                   dtype: torch.dtype | str, batch_size: int, max_length: int | None,
                   **session_kwargs: Any) -> Pipeline:
    if resolve_dtype(dtype) != torch.float32:
        raise ValueError("with backend='onnxruntime' the dtype was fixed at export time: export with --fp16 "
                         "(fp16=True) for a float16 graph and leave dtype at float32")
    if not isinstance(model, OnnxModel):
        provider = "cuda" if torch.device(device).type == "cuda" else "cpu"
        model = OnnxModel(model, provider=provider, **session_kwargs)
    export_task = get_task(task).export_task
    if model.task != export_task:
        raise ValueError(f"{model.path} is a {model.task!r} export; the {task!r} pipeline needs an export made "
                         f"with --task {export_task}")
    folder = os.path.dirname(model.path)  # export_onnx saves the config and tokenizer files beside model.onnx
    cls = PIPELINES[task]
    return cls(model, _as_tokenizer(folder if tokenizer is None else tokenizer), batch_size=batch_size,
               max_length=max_length, **cls.folder_options(folder, local_files_only=True))
