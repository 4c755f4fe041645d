"""Padding-free execution: pack the real tokens of a padded batch, and put them back.

A packed batch is one (T, ...) tensor of the T real tokens, in row-major order of the padded
(B, S) layout, plus ``cu_seqlens`` (B + 1,) int32, the cumulative number of real tokens per sequence,
which is what varlen attention kernels take. Padding may be anywhere in a row, not only at the end:
the tokens of a sequence are its real tokens in order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Packing:
    """Where the real tokens of a (B, S) batch live."""

    indices: torch.Tensor  # (T,) int64 flat positions b * S + s of the real tokens
    cu_seqlens: torch.Tensor  # (B + 1,) int32 cumulative real-token counts, starting at 0
    max_seqlen: int  # longest sequence (real tokens) in the batch
    batch: int  # B
    seq_len: int  # S
    starts_real: bool  # every row's first position is a real token (no left padding)


def packing_of(key_padding_mask: torch.Tensor) -> Packing:
    """Packing for a (B, S) bool mask, True = real token."""
    batch, seq_len = key_padding_mask.shape
    lengths = key_padding_mask.sum(dim=1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(key_padding_mask.reshape(-1), as_tuple=False).flatten()  # (T,)
    cu_seqlens = F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))  # (B + 1,)
    max_seqlen, starts_real = torch.stack([lengths.max(), key_padding_mask[:, 0].all().to(torch.int32)]).tolist()
    return Packing(indices, cu_seqlens, max_seqlen, batch, seq_len, bool(starts_real))


def unpad(x: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(B, S, ...) -> (T, ...): the real tokens only."""
    return x.reshape(packing.batch * packing.seq_len, *x.shape[2:]).index_select(0, packing.indices)


def pad(packed: torch.Tensor, packing: Packing) -> torch.Tensor:
    """(T, ...) -> (B, S, ...), zeros at padding positions."""
    out = packed.new_zeros(packing.batch * packing.seq_len, *packed.shape[1:])
    out.index_copy_(0, packing.indices, packed)
    return out.view(packing.batch, packing.seq_len, *packed.shape[1:])  # (B, S, ...)
