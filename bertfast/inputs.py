"""Validation of model inputs: every bad input is a clear exception, never a silent wrong answer.

All value-range checks are reduced to one host synchronisation per call.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import torch

from bertfast.config import BertConfig
from bertfast.ops import exporting
from bertfast.padding import PackedBatch
from bertfast_kernels.launch import ID_DTYPES

INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
IGNORE_INDEX = -100  # label of positions that carry no loss (transformers' ignore_index)
_TRUSTED = contextvars.ContextVar("bertfast_inputs_trusted", default=False)


@contextlib.contextmanager
def trusted_inputs() -> Iterator[None]:
    """Skip the value checks, which synchronise with the host, and the data-dependent choices that follow
    from them (dropping an all-ones mask, packing). For CUDA-graph capture, whose caller validated the
    real inputs before copying them into the static buffers. Tracing for export (symbolic values) is
    always trusted."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def inputs_trusted() -> bool:
    return _TRUSTED.get() or exporting()


def _check_tensor(name: str, value: object, shape: torch.Size | None, device: torch.device, integer: bool) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}; "
                        f"tokenize with return_tensors='pt'")
    if integer and value.dtype not in ID_DTYPES:
        raise TypeError(f"{name} must be an int64 or int32 tensor of ids, got dtype {value.dtype}")
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
    if seq_len > config.max_sequence_length:
        raise ValueError(f"sequence length {seq_len} exceeds {positions_text(config)}; tokenize with truncation=True, "
                         f"max_length={config.max_sequence_length}")
    checks = [("input_ids", input_ids, config.vocab_size)]
    token_type_ids = token_type_ids if config.token_types else None  # ignored by the model: not checked
    for name, value, limit in (("token_type_ids", token_type_ids, config.type_vocab_size),
                               ("position_ids", position_ids, config.max_sequence_length)):
        if value is not None:
            _check_tensor(name, value, input_ids.shape, device, integer=True)
            checks.append((name, value, limit))
    if attention_mask is not None:
        _check_tensor("attention_mask", attention_mask, input_ids.shape, device, integer=False)
        if attention_mask.dtype != torch.bool and attention_mask.dtype not in INTEGER_DTYPES:
            raise TypeError(f"attention_mask has dtype {attention_mask.dtype}; pass an int or bool mask (1 or True = "
                            f"token, 0 or False = padding), e.g. attention_mask.long(), not a float or additive mask")
        checks.append(("attention_mask", attention_mask, 2))
    if inputs_trusted():
        return None if attention_mask is None else _as_bool(attention_mask)
    bounds = _check_ranges(checks)
    if attention_mask is None or bounds[-1][0] == 1:
        return None
    return _as_bool(attention_mask)


def _check_ranges(checks: list[tuple[str, torch.Tensor, int]]) -> list[list[float]]:
    """Each (name, tensor, limit) holds values in [0, limit), in one host sync; -> each tensor's [min, max]."""
    bounds = torch.stack([torch.stack([v.min(), v.max()]).to(torch.float64) for _, v, _ in checks]).tolist()
    for (name, _, limit), (low, high) in zip(checks, bounds):
        if low < 0 or high >= limit:
            allowed = "0 (padding) or 1 (token)" if name == "attention_mask" else f"[0, {limit})"
            raise ValueError(f"{name} has values in [{low:g}, {high:g}] but must be in {allowed}")
    return bounds


def check_packed(config: BertConfig, device: torch.device, packed: PackedBatch) -> None:
    """Validate a PackedBatch: (T,) id tensors on the model's device, cu_seqlens (B + 1,) int32, no sequence
    longer than max_position_embeddings; the value ranges in one host sync (skipped under ``trusted_inputs``)."""
    tokens = packed.input_ids.shape
    if packed.input_ids.dim() != 1 or tokens[0] == 0:
        raise ValueError(f"PackedBatch.input_ids must be 1-D (tokens,) and non-empty, got shape {tuple(tokens)}; "
                         f"build it with PackedBatch.from_token_lists or PackedBatch.from_padded")
    names = ("input_ids", "token_type_ids", "position_ids") if config.token_types else ("input_ids", "position_ids")
    for name in names:
        value = getattr(packed, name)
        _check_tensor(f"PackedBatch.{name}", value, tokens, device, integer=True)
    if packed.cu_seqlens.dtype != torch.int32 or packed.cu_seqlens.shape != (packed.batch_size + 1,):
        raise ValueError(f"PackedBatch.cu_seqlens must be int32 of shape ({packed.batch_size + 1},) (one more than "
                         f"its {packed.batch_size} lengths), got {packed.cu_seqlens.dtype} "
                         f"{tuple(packed.cu_seqlens.shape)}")
    _check_tensor("PackedBatch.cu_seqlens", packed.cu_seqlens, None, device, integer=True)
    if packed.max_seqlen > config.max_sequence_length:
        raise ValueError(f"a sequence of {packed.max_seqlen} tokens exceeds {positions_text(config)}; tokenize with "
                         f"truncation=True, max_length={config.max_sequence_length}")
    if inputs_trusted():
        return
    checks = [("PackedBatch.input_ids", packed.input_ids, config.vocab_size)]
    if config.token_types:  # else ignored by the model: not checked
        checks.append(("PackedBatch.token_type_ids", packed.token_type_ids, config.type_vocab_size))
    checks.append(("PackedBatch.position_ids", packed.position_ids, config.max_sequence_length))
    _check_ranges(checks)


def _as_bool(attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask if attention_mask.dtype == torch.bool else attention_mask != 0


def check_integer_labels(labels: torch.Tensor, shape: torch.Size, name: str) -> None:
    """An integer tensor of the given shape; its values are not looked at (no host synchronisation)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name} must be an integer tensor")
    if labels.shape != shape:
        raise ValueError(f"{name} has shape {tuple(labels.shape)}, expected {tuple(shape)}")


def check_labels(labels: torch.Tensor, shape: torch.Size, num_classes: int, name: str) -> None:
    """Labels must be integer class ids in [0, num_classes) (or IGNORE_INDEX = ignored) of the given shape."""
    check_integer_labels(labels, shape, name)
    valid = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < num_classes))
    if not bool(valid.all()):
        raise ValueError(f"{name} must hold class ids in [0, {num_classes}) or {IGNORE_INDEX} (ignored)")


def check_real_labels(labels: torch.Tensor, shape: torch.Size, name: str) -> None:
    """Real-valued targets (regression values, multi-label 0/1 or probabilities) of the given shape."""
    if not isinstance(labels, torch.Tensor) or labels.is_complex():
        raise TypeError(f"{name} must be a real-valued tensor (float, or 0/1 for multi-label targets)")
    if labels.shape != shape:
        raise ValueError(f"{name} has shape {tuple(labels.shape)}, expected {tuple(shape)}")


def random_batch(config: BertConfig, lengths: Sequence[int], seq_len: int | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random model inputs for tests, validation and benchmarks: each (B, S) int64, right padding.

    Row b has ``lengths[b]`` real tokens (random ids other than ``pad_token_id``), padded with
    ``pad_token_id`` to ``seq_len`` (default: the longest); the second half of each sequence is segment 1
    when the config has two token types. ``generator`` None draws from torch's global generator.
    """
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be a non-empty list of positive token counts, got {list(lengths)}")
    seq_len = max(lengths) if seq_len is None else seq_len
    if seq_len < max(lengths):
        raise ValueError(f"seq_len {seq_len} is shorter than the longest sequence ({max(lengths)})")
    ids = torch.randint(0, config.vocab_size - 1, (len(lengths), seq_len), generator=generator)  # (B, S)
    ids += (ids >= config.pad_token_id).long()  # skip the pad id
    positions = torch.arange(seq_len)[None, :]  # (1, S)
    real = torch.tensor(list(lengths))[:, None]  # (B, 1)
    mask = positions < real  # (B, S)
    second = (positions >= real // 2) & mask if config.type_vocab_size > 1 else torch.zeros_like(mask)
    return {"input_ids": ids.masked_fill(~mask, config.pad_token_id), "attention_mask": mask.long(),
            "token_type_ids": second.long()}


def positions_text(config: BertConfig) -> str:
    """The model's length limit in words: max_position_embeddings, less the rows before position 0 if any."""
    if not config.position_offset:
        return f"max_position_embeddings ({config.max_position_embeddings})"
    return (f"the model's {config.max_sequence_length} positions (max_position_embeddings "
            f"{config.max_position_embeddings} less the {config.position_offset} rows before the first)")
