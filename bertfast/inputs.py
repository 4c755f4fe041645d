"""Validation of model inputs: every bad input is a clear exception, never a silent wrong answer.

All value-range checks are reduced to one host synchronisation per call.
"""
from __future__ import annotations

import torch

from bertfast.config import BertConfig
from bertfast.ops import _exporting

INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _check_tensor(name: str, value: object, shape: torch.Size | None, device: torch.device, integer: bool) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}; "
                        f"tokenize with return_tensors='pt'")
    if integer and value.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {value.dtype}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has shape {tuple(shape)}; "
                         f"they must match (batch, sequence)")
    if value.device.type != device.type:
        raise ValueError(f"{name} is on {value.device} but the model is on {device}; move the inputs with "
                         f".to({str(device)!r})")


def check_inputs(config: BertConfig, device: torch.device, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor | None:
    """Validate the forward inputs and return the key padding mask: (B, S) bool with True = real token,
    or None when there is no padding at all (the attention then skips masking)."""
    _check_tensor("input_ids", input_ids, None, device, integer=True)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be 2-D (batch, sequence), got shape {tuple(input_ids.shape)}; "
                         f"for one sequence use input_ids[None]")
    batch, seq_len = input_ids.shape
    if batch == 0 or seq_len == 0:
        raise ValueError(f"empty input: input_ids has shape {tuple(input_ids.shape)}; pass at least one token")
    if seq_len > config.max_position_embeddings:
        raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings "
                         f"({config.max_position_embeddings}); tokenize with truncation=True, "
                         f"max_length={config.max_position_embeddings}")
    checks = [("input_ids", input_ids, config.vocab_size)]
    for name, value, limit in (("token_type_ids", token_type_ids, config.type_vocab_size),
                               ("position_ids", position_ids, config.max_position_embeddings)):
        if value is not None:
            _check_tensor(name, value, input_ids.shape, device, integer=True)
            checks.append((name, value, limit))
    if attention_mask is not None:
        _check_tensor("attention_mask", attention_mask, input_ids.shape, device, integer=False)
        checks.append(("attention_mask", attention_mask, 2))
    if _exporting():  # traced (ONNX / torch.export): values are symbolic, so no value checks and always a mask
        return None if attention_mask is None else attention_mask != 0
    bounds = torch.stack([torch.stack([v.min(), v.max()]).to(torch.float64) for _, v, _ in checks]).tolist()
    for (name, _, limit), (low, high) in zip(checks, bounds):
        if low < 0 or high >= limit:
            allowed = "0 (padding) or 1 (token)" if name == "attention_mask" else f"[0, {limit})"
            raise ValueError(f"{name} has values in [{low:g}, {high:g}] but must be in {allowed}")
    if attention_mask is None or bounds[-1][0] == 1:
        return None
    return attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0


def check_labels(labels: torch.Tensor, shape: torch.Size, num_classes: int, name: str) -> None:
    """Labels must be integer class ids in [0, num_classes) (or -100 = ignored) of the given shape."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name} must be an integer tensor")
    if labels.shape != shape:
        raise ValueError(f"{name} has shape {tuple(labels.shape)}, expected {tuple(shape)}")
    valid = (labels == -100) | ((labels >= 0) & (labels < num_classes))
    if not bool(valid.all()):
        raise ValueError(f"{name} must hold class ids in [0, {num_classes}) or -100 (ignored)")
