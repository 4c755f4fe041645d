"""What every pipeline shares: tokenize once, in length-sorted batches of token lists, run the model without
gradients, postprocess each row; and the input normalisation of texts."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from bertfast.export.onnx_model import OnnxModel
from bertfast.models.bert import BertModel
from bertfast.inputs import positions_text
from bertfast.padding import PackedBatch
from bertfast.pretrained import BertPreTrainedModel
from bertfast.tokenizer import BertTokenizer

# token ids already known for an input: (text, text pair or None) -> (input_ids, token_type_ids), untruncated
KnownTokens = dict[tuple[str, str | None], tuple[list[int], list[int]]]


@dataclass
class TokenBatch:
    """One model call's inputs as token lists on the host: built into a packed batch or a padded one."""

    index: list[int]  # each row's position among the pipeline's inputs
    input_ids: list[list[int]]  # B token-id lists (special tokens included, truncated to max_length)
    token_type_ids: list[list[int]]  # their segment ids

    def packed(self, device: torch.device | str) -> PackedBatch:
        """The rows as the model's native input (lengths known here: no device sync)."""
        return PackedBatch.from_token_lists(self.input_ids, self.token_type_ids, device=device)

    def padded(self, device: torch.device | str, pad_token_id: int) -> dict[str, torch.Tensor]:
        """The rows padded on the right to the longest, as the tokenizer's ``padding=True`` gives them: (B, S) int64
        ``input_ids``, ``token_type_ids`` and ``attention_mask`` (what an exported graph takes)."""
        width = max(len(ids) for ids in self.input_ids)

        def rows(values: list[list[int]], fill: int) -> torch.Tensor:
            return torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=torch.long, device=device)

        return {"input_ids": rows(self.input_ids, pad_token_id), "token_type_ids": rows(self.token_type_ids, 0),
                "attention_mask": rows([[1] * len(ids) for ids in self.input_ids], 0)}


class Pipeline:
    """Tokenize -> model -> postprocess, in length-sorted batches, without gradients."""

    model_class: type[BertPreTrainedModel] = BertModel
    packed_input = False  # _process takes a PackedBatch on a bertfast model (an exported graph: padded tensors)

    def __init__(self, model: BertPreTrainedModel | OnnxModel, tokenizer: BertTokenizer, batch_size: int = 32,
                 max_length: int | None = None):
        """``max_length``: the truncation length in tokens (default: the tokenizer's ``model_max_length``, at most
        the model's positions, ``config.max_sequence_length``); ``batch_size``: texts per model call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        positions = model.config.max_sequence_length
        if max_length is not None and not 1 <= max_length <= positions:
            raise ValueError(f"max_length must be between 1 and the model's {positions_text(model.config)}, "
                             f"got {max_length}")
        self.model = model.eval() if isinstance(model, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or min(tokenizer.model_max_length, positions)
        self._known: KnownTokens = {}

    @contextlib.contextmanager
    def known_tokens(self, known: KnownTokens) -> Iterator[None]:
        """Within the block, an input found in ``known`` is not tokenized again (the serving layer counts tokens
        before it calls the pipeline; it passes what it counted). Only entries of at most ``max_length`` tokens
        are taken; the pipelines that run long texts in windows tokenize for themselves."""
        previous, self._known = self._known, known
        try:
            yield
        finally:
            self._known = previous

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
                                      return_token_type_ids=True, **options)
            encoding = {k: v.to(self.model.device) for k, v in encoding.items()}
            batches.append({"index": index, **encoding})
        return batches

    def _token_batches(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[TokenBatch]:
        """Every input tokenized once (truncated to ``max_length``; the ``known_tokens`` taken as they are), in
        batches of ``batch_size`` grouped by length so little padding is computed."""
        keys = [(text, pairs[i] if pairs else None) for i, text in enumerate(texts)]
        known = {i: self._known[key] for i, key in enumerate(keys)
                 if key in self._known and len(self._known[key][0]) <= self.max_length}
        missing = [i for i in range(len(keys)) if i not in known]
        if missing:
            encoding = self.tokenizer([texts[i] for i in missing], [pairs[i] for i in missing] if pairs else None,
                                      truncation=True, max_length=self.max_length, return_attention_mask=False,
                                      return_token_type_ids=True)  # a model takes them, whatever the tokenizer
            known.update(zip(missing, zip(encoding["input_ids"], encoding["token_type_ids"])))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
        return [TokenBatch(index, [known[i][0] for i in index], [known[i][1] for i in index])
                for index in (order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size))]

    def _run(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **params: Any) -> list[Any]:
        results: list[Any] = [None] * len(texts)
        with torch.inference_mode():
            for batch in self._token_batches(texts, pairs):
                for i, result in zip(batch.index, self._process(self._model_input(batch), **params)):
                    results[i] = result
        return results

    def _model_input(self, batch: TokenBatch) -> PackedBatch | dict[str, torch.Tensor]:
        """What ``_process`` takes for one batch, on the model's device: the packed batch where the pipeline runs
        packed on a bertfast model, else its padded tensors."""
        if self.packed_input and not isinstance(self.model, OnnxModel):
            return batch.packed(self.model.device)
        return batch.padded(self.model.device, self.tokenizer.pad_token_id)

    def _call_model(self, batch: PackedBatch | dict[str, torch.Tensor]) -> Any:
        """The model's outputs for one ``_model_input``."""
        return self.model(batch) if isinstance(batch, PackedBatch) else self.model(**batch)

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
