"""bertfast.padding: pooling over packed tokens (pool_packed) against the padded computation the pipelines had."""
from __future__ import annotations

import pytest
import torch

from bertfast.padding import PackedBatch, pool_packed, sequence_ids
from bertfast.pipelines.feature_extraction import pool
from bertfast.st_config import POOLING_MODES

LENGTHS = (1, 7, 33, 2, 13)


def _padded(hidden: torch.Tensor, lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed rows (T, H) put back into a right-padded (B, S, H) batch and its (B, S) mask."""
    rows = torch.split(hidden, list(lengths))
    padded = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)  # (B, S, H)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(n, dtype=torch.long) for n in lengths], batch_first=True)
    return padded, mask


@pytest.mark.parametrize("skip", [0, 2])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_each_mode_matches_the_padded_pooling(mode, skip):
    packed = PackedBatch.from_token_lists([[1] * n for n in LENGTHS])
    hidden = torch.randn(sum(LENGTHS), 16, dtype=torch.float64)  # (T, H)
    padded, mask = _padded(hidden, LENGTHS)
    mask[:, :skip] = 0  # the prompt's tokens are not pooled (a 1- or 2-token sequence then pools none)
    expected = pool(padded, mask, (mode,))
    torch.testing.assert_close(pool_packed(hidden, packed, (mode,), skip=skip), expected, rtol=1e-12, atol=1e-12)


def test_modes_concatenate_in_order():
    packed = PackedBatch.from_token_lists([[1] * n for n in LENGTHS])
    hidden = torch.randn(sum(LENGTHS), 8)
    both = pool_packed(hidden, packed, ("mean", "cls"))
    assert both.shape == (len(LENGTHS), 16)
    torch.testing.assert_close(both[:, 8:], hidden[[0, 1, 8, 41, 43]])


def test_sequence_ids_label_each_row():
    assert sequence_ids((2, 1, 3)).tolist() == [0, 0, 1, 2, 2, 2]


def test_an_unknown_mode_is_named():
    packed = PackedBatch.from_token_lists([[1, 2]])
    with pytest.raises(ValueError, match="pooling mode 'median' is not one of cls"):
        pool_packed(torch.zeros(2, 4), packed, ("median",))
