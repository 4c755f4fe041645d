"""``bertfast.pipeline(task, model=...)``: pipelines shaped like transformers', one module per task."""
from __future__ import annotations

import os
from typing import Any

import torch

from bertfast.config import resolve_dtype
from bertfast.export.onnx_model import OnnxModel
from bertfast.ops import resolve_device
from bertfast.pretrained import BertPreTrainedModel
from bertfast.pipelines.base import Pipeline
from bertfast.pipelines.feature_extraction import FeatureExtractionPipeline
from bertfast.pipelines.fill_mask import FillMaskPipeline
from bertfast.pipelines.next_sentence import NextSentencePipeline
from bertfast.tokenizer import BertTokenizer

DEFAULT_MODEL = "bert-base-uncased"
PIPELINE_BACKENDS = ("torch", "onnxruntime")  # what runs a pipeline's model (not ops.BACKENDS)

PIPELINES: dict[str, type[Pipeline]] = {
    "fill-mask": FillMaskPipeline,
    "next-sentence": NextSentencePipeline,
    "feature-extraction": FeatureExtractionPipeline,
}


def pipeline(task: str, model: str | os.PathLike | BertPreTrainedModel | OnnxModel = DEFAULT_MODEL,
             tokenizer: str | os.PathLike | BertTokenizer | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype | str = torch.float32, batch_size: int = 32, backend: str = "torch",
             **load_kwargs: Any) -> Pipeline:
    """Build a pipeline: ``pipeline("fill-mask", model="bert-base-uncased")`` (also "next-sentence",
    "feature-extraction"). ``model`` is a checkpoint (directory or hub id) or a loaded bertfast model;
    ``tokenizer`` defaults to the checkpoint's.

    ``backend="onnxruntime"`` runs an export of the same task instead (``bertfast export-onnx``): ``model`` is
    its directory, its .onnx file or an ``OnnxModel``; ``device`` "cuda" picks the CUDA execution provider;
    ``load_kwargs`` go to ``OnnxModel``; the dtype was fixed at export (``--fp16``).
    """
    if task not in PIPELINES:
        raise ValueError(f"unknown task {task!r}; available: {sorted(PIPELINES)}")
    if backend not in PIPELINE_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {PIPELINE_BACKENDS}")
    cls = PIPELINES[task]
    device = resolve_device(device)  # before anything is loaded
    if backend == "onnxruntime" or isinstance(model, OnnxModel):
        return _onnx_pipeline(task, model, tokenizer, device, dtype, batch_size, **load_kwargs)
    if isinstance(model, BertPreTrainedModel):
        if tokenizer is None:
            raise ValueError("pass tokenizer= (a path or BertTokenizer) together with an already loaded model")
        loaded = model
    else:
        loaded = cls.model_class.from_pretrained(model, dtype=resolve_dtype(dtype), device=device, **load_kwargs)
        tokenizer = model if tokenizer is None else tokenizer
    if not isinstance(loaded, cls.model_class):
        raise TypeError(f"task {task!r} needs a {cls.model_class.__name__}, got {type(loaded).__name__}")
    return cls(loaded, _as_tokenizer(tokenizer), batch_size=batch_size)


def _as_tokenizer(tokenizer: str | os.PathLike | BertTokenizer) -> BertTokenizer:
    return tokenizer if isinstance(tokenizer, BertTokenizer) else BertTokenizer.from_pretrained(tokenizer)


def _onnx_pipeline(task: str, model: str | os.PathLike | OnnxModel,
                   tokenizer: str | os.PathLike | BertTokenizer | None, device: torch.device | str,
                   dtype: torch.dtype | str, batch_size: int, **session_kwargs: Any) -> Pipeline:
    if resolve_dtype(dtype) != torch.float32:
        raise ValueError("with backend='onnxruntime' the dtype was fixed at export time: export with --fp16 "
                         "(fp16=True) for a float16 graph and leave dtype at float32")
    if not isinstance(model, OnnxModel):
        provider = "cuda" if torch.device(device).type == "cuda" else "cpu"
        model = OnnxModel(model, provider=provider, **session_kwargs)
    if model.task != task:
        raise ValueError(f"{model.path} is a {model.task!r} export; the {task!r} pipeline needs an export made "
                         f"with --task {task}")
    if tokenizer is None:
        tokenizer = os.path.dirname(model.path)  # export_onnx saves the tokenizer files beside model.onnx
    return PIPELINES[task](model, _as_tokenizer(tokenizer), batch_size=batch_size)
