"""bertfast.padding: pooling over packed tokens (pool_packed) against the padded computation the pipelines had."""
from __future__ import annotations

from typing import Sequence

import pytest
import torch

from bertfast.padding import pool_packed, sequence_ids
from bertfast.st_config import POOLING_MODES

LENGTHS = (1, 7, 33, 2, 13)


def padded_pool(hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """The padded pooling the feature-extraction pipeline had, the reference here: right-padded token vectors
    hidden (B, S, H) and mask (B, S) (1 = a token to pool) -> (B, len(modes) * H), each mode of ``POOLING_MODES``
    as sentence-transformers' Pooling computes it, concatenated in order."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
    count = weights.sum(1).clamp(min=1e-9)  # (B, 1)
    out = []
    for mode in modes:
        if mode == "cls":  # the first pooled token
            out.append(hidden[rows, mask.int().argmax(1)])
        elif mode == "max":
            out.append(hidden.masked_fill(weights == 0, float("-inf")).amax(1))
        elif mode == "mean":
            out.append((hidden * weights).sum(1) / count)
        elif mode == "mean_sqrt_len_tokens":
            out.append((hidden * weights).sum(1) / count.sqrt())
        elif mode == "weightedmean":  # position p (from 1) weighs p
            positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
            weighted = weights * positions[:, None]  # (B, S, 1)
            out.append((hidden * weighted).sum(1) / weighted.sum(1).clamp(min=1e-9))
        elif mode == "lasttoken":  # the last pooled token (zeros for a row with none)
            last = hidden.shape[1] - 1 - mask.int().flip(1).argmax(1)  # (B,)
            out.append(hidden[rows, last] * weights[rows, last])
    return torch.cat(out, dim=-1)


def _padded(hidden: torch.Tensor, lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed rows (T, H) put back into a right-padded (B, S, H) batch and its (B, S) mask."""
    rows = torch.split(hidden, list(lengths))
    padded = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)  # (B, S, H)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(n, dtype=torch.long) for n in lengths], batch_first=True)
    return padded, mask


@pytest.mark.parametrize("skip", [0, 2])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_each_mode_matches_the_padded_pooling(mode, skip):
    hidden = torch.randn(sum(LENGTHS), 16, dtype=torch.float64)  # (T, H)
    padded, mask = _padded(hidden, LENGTHS)
    mask[:, :skip] = 0  # the prompt's tokens are not pooled (a 1- or 2-token sequence then pools none)
    expected = padded_pool(padded, mask, (mode,))
    torch.testing.assert_close(pool_packed(hidden, LENGTHS, (mode,), skip=skip), expected, rtol=1e-12, atol=1e-12)


def test_modes_concatenate_in_order():
    hidden = torch.randn(sum(LENGTHS), 8)
    both = pool_packed(hidden, LENGTHS, ("mean", "cls"))
    assert both.shape == (len(LENGTHS), 16)
    torch.testing.assert_close(both[:, 8:], hidden[[0, 1, 8, 41, 43]])


def test_sequence_ids_label_each_row():
    assert sequence_ids((2, 1, 3)).tolist() == [0, 0, 1, 2, 2, 2]


def test_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="pooling mode 'median' is not one of cls"):
        pool_packed(torch.zeros(2, 4), (2,), ("median",))
