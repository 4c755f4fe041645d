"""Benchmark workloads (batch x sequence grid and mixed lengths), their inputs, and the model FLOP count.

Every provider gets the same batch, padded on the right to its longest sequence, as a tokenizer with
``padding=True`` produces it (dynamic padding). Padded providers compute on the padding; bertfast's
padding-free path drops it internally. Throughput and FLOPs count real tokens only, so providers are
credited for useful work alone.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from bertfast.config import BertConfig
from bertfast.inputs import random_batch

# Mixed-length traffic: log-normal lengths with median 64 tokens and sigma 0.8 (p90 ~ 180, p99 ~ 410),
# clipped to [16, 512]: short queries and sentences, a tail of passages, as in retrieval and embedding traffic.
MIXED_MEDIAN = 64
MIXED_SIGMA = 0.8
MIXED_RANGE = (16, 512)


@dataclass(frozen=True)
class Workload:
    """One batch shape. ``lengths``: real tokens of each sequence; the batch is padded to the longest."""

    name: str  # "b8-s128" (all real) or "b8-mixed"
    lengths: tuple[int, ...]  # (B,) real tokens per sequence
    mixed: bool  # lengths drawn from the mixed-length distribution
    seed: int  # seed of the token ids

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def seq_len(self) -> int:
        """Padded length: the longest sequence."""
        return max(self.lengths)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    def inputs(self, config: BertConfig, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids, each (B, S) int64, right padding with pad_token_id.

        Real tokens are random ids other than the pad id; the second half of each sequence is segment 1.
        """
        generator = torch.Generator().manual_seed(self.seed)
        batch = random_batch(config, self.lengths, generator=generator)
        return {k: v.to(device) for k, v in batch.items()}


def _seed(base: int, name: str) -> int:
    return (base * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def mixed_lengths(batch: int, seed: int, low: int = MIXED_RANGE[0], high: int = MIXED_RANGE[1]) -> tuple[int, ...]:
    """``batch`` lengths from the mixed-length distribution, clipped to [low, high]; the same for a seed."""
    if not 1 <= low <= high:
        raise ValueError(f"mixed lengths need 1 <= low <= high, got [{low}, {high}]")
    draws = np.random.default_rng(seed).lognormal(np.log(MIXED_MEDIAN), MIXED_SIGMA, size=batch)
    return tuple(int(x) for x in np.clip(np.rint(draws), low, high))


def build_workloads(batches: list[int], seqs: list[int], mixed: bool, max_len: int, seed: int = 0) -> list[Workload]:
    """The grid batches x seqs (all tokens real), then, with ``mixed``, one mixed-length workload per batch
    size > 1, lengths in [min(16, max_len), min(512, max_len)]."""
    for n in (*batches, *seqs):
        if n < 1:
            raise ValueError(f"batch sizes and sequence lengths must be positive, got {n}")
    too_long = [s for s in seqs if s > max_len]
    if too_long:
        raise ValueError(f"--seq {too_long} is longer than the model's max_position_embeddings ({max_len})")
    workloads = []
    for batch in batches:
        for seq in seqs:
            name = f"b{batch}-s{seq}"
            workloads.append(Workload(name, (seq,) * batch, False, _seed(seed, name)))
    if mixed:
        high = min(MIXED_RANGE[1], max_len)
        for batch in (b for b in batches if b > 1):
            name = f"b{batch}-mixed"
            lengths = mixed_lengths(batch, _seed(seed, name), min(MIXED_RANGE[0], high), high)
            workloads.append(Workload(name, lengths, True, _seed(seed, name + "/ids")))
    return workloads


FLOPS_FORMULA = ("FLOPs = sum over sequences of length L of [layers * (8 L H^2 + 4 L H I + 4 L^2 H) + 2 H^2]: "
                 "2 FLOPs per multiply-add of every matmul on real tokens (QKV 6LH^2, attention output 2LH^2, "
                 "feed-forward 4LHI, scores and context 4L^2H, pooler 2H^2); embeddings, LayerNorm, softmax "
                 "and GELU not counted")


def model_flops(config: BertConfig, lengths: tuple[int, ...] | list[int]) -> int:
    """Matmul FLOPs of one forward pass of the encoder over sequences of these real lengths, as its architecture
    counts them (``config.matmul_flops``; BERT's: ``FLOPS_FORMULA``)."""
    return sum(config.matmul_flops(length) for length in lengths)


def flops_formula(config: BertConfig) -> str:
    """``FLOPS_FORMULA``, with the architecture's own per-sequence count where it differs from BERT's."""
    if config.flops_formula == BertConfig.flops_formula:
        return FLOPS_FORMULA
    return f"{FLOPS_FORMULA}; this architecture: FLOPs = sum over sequences of [{config.flops_formula}]"
