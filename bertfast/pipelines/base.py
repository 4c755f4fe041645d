"""What every pipeline shares: tokenize in length-sorted batches, run the model without gradients, postprocess
each row; and the input normalisation of texts."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from bertfast.export.onnx_model import OnnxModel
from bertfast.modeling import BertModel
from bertfast.pretrained import BertPreTrainedModel
from bertfast.tokenizer import BertTokenizer


class Pipeline:
    """Tokenize -> model -> postprocess, in length-sorted batches, without gradients."""

    model_class: type[BertPreTrainedModel] = BertModel

    def __init__(self, model: BertPreTrainedModel | OnnxModel, tokenizer: BertTokenizer, batch_size: int = 32,
                 max_length: int | None = None):
        """``max_length``: the truncation length in tokens (default: the tokenizer's ``model_max_length``, at most
        the model's ``max_position_embeddings``); ``batch_size``: texts per model call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        positions = model.config.max_position_embeddings
        if max_length is not None and not 1 <= max_length <= positions:
            raise ValueError(f"max_length must be between 1 and the model's max_position_embeddings ({positions}), "
                             f"got {max_length}")
        self.model = model.eval() if isinstance(model, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or min(tokenizer.model_max_length, positions)

    @classmethod
    def folder_options(cls, name_or_path: str | os.PathLike, local_files_only: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``__init__`` that the model folder sets beyond the weights (a sentence-transformers
        pooling, a cross-encoder's activation...): none unless a task reads some."""
        return {}

    def _encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                **options: Any) -> list[dict[str, torch.Tensor]]:
        """One encoding per batch of inputs, batches grouped by length so little padding is computed; ``options``
        go to the tokenizer."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
        batches = []
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            encoding = self.tokenizer([texts[i] for i in index], [pairs[i] for i in index] if pairs else None,
                                      padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                                      **options)
            encoding = {k: v.to(self.model.device) for k, v in encoding.items()}
            batches.append({"index": index, **encoding})
        return batches

    def _run(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **params: Any) -> list[Any]:
        results: list[Any] = [None] * len(texts)
        with torch.inference_mode():
            for batch in self._encode(texts, pairs):
                index = batch.pop("index")
                for i, result in zip(index, self._process(batch, **params)):
                    results[i] = result
        return results

    def _process(self, batch: dict[str, torch.Tensor], **params: Any) -> list[Any]:
        """Model outputs of one batch -> one result per row."""
        raise NotImplementedError


def check_top_k(top_k: int | None) -> None:
    """None, or a positive int."""
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive int (or None), got {top_k!r}")


def as_list(texts: str | Sequence[str], name: str) -> tuple[list[str], bool]:
    if isinstance(texts, str):
        return [texts], True
    texts = list(texts) if isinstance(texts, (list, tuple)) else []
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{name} must be a string or a non-empty list of strings")
    return texts, False
