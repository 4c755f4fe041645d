"""Padding-free execution: pack the real tokens of a padded batch, and put them back.

A packed batch is one (T, ...) tensor of the T real tokens, in row-major order of the padded
(B, S) layout, plus ``cu_seqlens`` (B + 1,) int32, the cumulative number of real tokens per sequence,
which is what varlen attention kernels take. Padding may be anywhere in a row, not only at the end:
the tokens of a sequence are its real tokens in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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


@dataclass
class PackedBatch:
    """The model's native input: the real tokens of B sequences, one sequence after another, with where each
    starts. Built on the host from token lists (``from_token_lists``: no device sync, the lengths are known) or
    from a padded (B, S) batch by the thin adapter ``from_padded`` (host syncs, to find the real tokens)."""

    input_ids: torch.Tensor  # (T,) int64 token ids
    position_ids: torch.Tensor  # (T,) int64 each token's position (0.. within its sequence unless given)
    token_type_ids: torch.Tensor  # (T,) int64 segment ids (zeros unless given)
    cu_seqlens: torch.Tensor  # (B + 1,) int32 cumulative lengths, starting at 0
    max_seqlen: int  # longest sequence
    lengths: tuple[int, ...]  # the B lengths, on the host

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    @classmethod
    def from_token_lists(cls, input_ids: Sequence[Sequence[int]],
                         token_type_ids: Sequence[Sequence[int]] | None = None,
                         device: torch.device | str | None = None) -> "PackedBatch":
        """B token-id lists (and their segment ids) -> a packed batch on ``device``; positions count from 0."""
        lengths = tuple(len(ids) for ids in input_ids)
        if not lengths or min(lengths) == 0:
            raise ValueError("a packed batch needs at least one sequence and no empty sequence")
        if token_type_ids is not None and tuple(len(t) for t in token_type_ids) != lengths:
            raise ValueError("token_type_ids must have one list per sequence, each as long as its input_ids")
        flat = [i for ids in input_ids for i in ids]
        types = [0] * len(flat) if token_type_ids is None else [t for row in token_type_ids for t in row]
        positions = [p for n in lengths for p in range(n)]
        cu = [0]
        for n in lengths:
            cu.append(cu[-1] + n)
        as_long = dict(dtype=torch.long, device=device)
        return cls(torch.tensor(flat, **as_long), torch.tensor(positions, **as_long), torch.tensor(types, **as_long),
                   torch.tensor(cu, dtype=torch.int32, device=device), max(lengths), lengths)

    @classmethod
    def from_padded(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None) -> tuple["PackedBatch", Packing]:
        """A padded (B, S) batch -> its packed batch and the packing that pads results back. Positions are
        the padded batch's (default 0..S-1 per row, as transformers counts them, padding included)."""
        batch, seq_len = input_ids.shape
        mask = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                else attention_mask.to(torch.bool))
        packing = packing_of(mask)
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=input_ids.device).expand(batch, seq_len)  # (B, S)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        lengths = tuple(torch.diff(packing.cu_seqlens).tolist())
        packed = cls(unpad(input_ids, packing), unpad(position_ids.expand(batch, seq_len), packing).long(),
                     unpad(token_type_ids, packing).long(), packing.cu_seqlens, packing.max_seqlen, lengths)
        return packed, packing

    def to(self, device: torch.device | str) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.token_type_ids.to(device),
                           self.cu_seqlens.to(device), self.max_seqlen, self.lengths)


def sequence_ids(lengths: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """(T,) int64: the sequence each packed row belongs to, built on the host from the known lengths (no sync)."""
    return torch.tensor([b for b, n in enumerate(lengths) for _ in range(n)], dtype=torch.long, device=device)


def pool_packed(hidden: torch.Tensor, lengths: Sequence[int], modes: Sequence[str], skip: int = 0) -> torch.Tensor:
    """Packed token vectors hidden (T, H) of B sequences (sequence b is rows ``cu_seqlens[b]:cu_seqlens[b + 1]``,
    given by the B ``lengths`` on the host) -> (B, len(modes) * H), each mode as sentence-transformers' Pooling computes it over
    a sequence's rows after its first ``skip`` (a prompt not pooled): "cls" (the first pooled row; the first row
    when none is), "max", "mean", "mean_sqrt_len_tokens", "weightedmean" (the row at position p from 1 weighs
    p), "lasttoken" (the last row; zeros when none is pooled). Every index is built on the host: no sync."""
    device, batch = hidden.device, len(lengths)
    starts = [0]  # cu_seqlens, on the host
    for n in lengths:
        starts.append(starts[-1] + n)
    seq = sequence_ids(lengths, device)  # (T,)
    positions = torch.tensor([p for n in lengths for p in range(n)], device=device)  # (T,) from 0 per sequence
    pooled = positions >= skip  # (T,)
    weights = pooled.to(hidden.dtype).unsqueeze(-1)  # (T, 1)
    count = torch.tensor([max(n - skip, 0) for n in lengths], dtype=hidden.dtype, device=device)
    count = count.clamp(min=1e-9).unsqueeze(-1)  # (B, 1)

    def total(x: torch.Tensor) -> torch.Tensor:  # (T, H) -> (B, H): each sequence's sum
        return x.new_zeros(batch, x.shape[-1]).index_add_(0, seq, x)

    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[[s + (skip if skip < n else 0) for s, n in zip(starts, lengths)]])
        elif mode == "max":
            masked = hidden.masked_fill(~pooled.unsqueeze(-1), float("-inf"))  # (T, H)
            init = hidden.new_full((batch, hidden.shape[-1]), float("-inf"))  # (B, H)
            out.append(init.scatter_reduce_(0, seq.unsqueeze(-1).expand_as(masked), masked, "amax"))
        elif mode == "mean":
            out.append(total(hidden * weights) / count)
        elif mode == "mean_sqrt_len_tokens":
            out.append(total(hidden * weights) / count.sqrt())
        elif mode == "weightedmean":
            weighted = weights * (positions + 1).to(hidden.dtype).unsqueeze(-1)  # (T, 1)
            out.append(total(hidden * weighted) / total(weighted).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = [end - 1 for end in starts[1:]]
            keep = torch.tensor([float(n > skip) for n in lengths], dtype=hidden.dtype, device=device)
            out.append(hidden[last] * keep.unsqueeze(-1))
        else:
            raise ValueError(f"pooling mode {mode!r} is not one of cls, max, mean, mean_sqrt_len_tokens, "
                             f"weightedmean, lasttoken")
    return torch.cat(out, dim=-1)
