"""bertfast/bench/workloads.py: the batch x sequence grid, mixed lengths, inputs and the model FLOP count."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bertfast.bench.workloads import MIXED_RANGE, build_workloads, flops_formula, mixed_lengths, model_flops
from bertfast.config import BertConfig


def test_mixed_lengths_are_bounded_seeded_and_spread():
    lengths = mixed_lengths(10_000, seed=3)
    assert min(lengths) >= MIXED_RANGE[0] and max(lengths) <= MIXED_RANGE[1]
    assert lengths == mixed_lengths(10_000, seed=3) and lengths != mixed_lengths(10_000, seed=4)
    assert 56 <= np.median(lengths) <= 72  # median 64 by construction
    assert min(lengths) == 16 and max(lengths) == 512  # the clipped tails are reached: a real spread
    assert max(mixed_lengths(50, seed=0, low=16, high=40)) <= 40
    with pytest.raises(ValueError, match="low <= high"):
        mixed_lengths(4, seed=0, low=30, high=20)


def test_workload_grid_and_inputs():
    workloads = build_workloads([1, 3], [8, 32], mixed=True, max_len=40, seed=0)
    assert [w.name for w in workloads] == ["b1-s8", "b1-s32", "b3-s8", "b3-s32", "b3-mixed"]
    mixed = workloads[-1]
    assert mixed.mixed and mixed.batch == 3 and all(16 <= n <= 40 for n in mixed.lengths)
    assert mixed.lengths == build_workloads([1, 3], [8, 32], mixed=True, max_len=40, seed=0)[-1].lengths

    config = BertConfig(vocab_size=50, pad_token_id=0)
    batch = mixed.inputs(config)
    assert batch["input_ids"].shape == (3, mixed.seq_len) == (3, max(mixed.lengths))
    assert batch["attention_mask"].sum(1).tolist() == list(mixed.lengths)
    real = batch["attention_mask"] == 1
    assert (batch["input_ids"][real] != 0).all() and (batch["input_ids"][~real] == 0).all()
    assert batch["input_ids"].max() < 50 and (batch["token_type_ids"][~real] == 0).all()
    assert batch["token_type_ids"][0, : mixed.lengths[0] // 2].eq(0).all()
    assert batch["token_type_ids"][0, mixed.lengths[0] // 2: mixed.lengths[0]].eq(1).all()
    assert torch.equal(batch["input_ids"], mixed.inputs(config)["input_ids"])  # reproducible
    assert mixed.real_tokens == sum(mixed.lengths)


def test_workloads_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"longer than the model's max_position_embeddings \(512\)"):
        build_workloads([1], [600], mixed=False, max_len=512)
    with pytest.raises(ValueError, match="must be positive"):
        build_workloads([0], [8], mixed=False, max_len=512)


def test_flops_formula_matches_a_hand_count_for_bert_base():
    config = BertConfig.from_preset("bert-base-uncased")
    tokens, width, ffn, heads, head_dim = 128, 768, 3072, 12, 64
    per_layer = [
        3 * 2 * tokens * width * width,  # query, key, value projections
        2 * heads * tokens * tokens * head_dim,  # scores Q K^T, per head
        2 * heads * tokens * tokens * head_dim,  # context P V, per head
        2 * tokens * width * width,  # attention output projection
        2 * tokens * width * ffn,  # feed-forward up
        2 * tokens * ffn * width,  # feed-forward down
    ]
    hand_count = 12 * sum(per_layer) + 2 * width * width  # + pooler on [CLS]
    assert hand_count == 22_348_431_360
    assert model_flops(config, [128]) == hand_count
    assert model_flops(config, [128, 128]) == 2 * hand_count
    assert model_flops(config, [100, 28]) < hand_count  # attention is quadratic in each sequence's own length


def test_flops_of_modernbert_count_the_gated_feed_forward_and_the_window():
    from bertfast.models.modernbert import ModernBertConfig
    config = ModernBertConfig(hidden_size=768, intermediate_size=1152, num_hidden_layers=3, num_attention_heads=12,
                              global_attn_every_n_layers=3, local_attention=128)  # layers: global, sliding, sliding
    tokens, width, ffn = 512, 768, 1152  # no pooler: none counted

    def layer(tokens, keys):
        return (3 * 2 * tokens * width * width + 2 * tokens * width * width  # Wqkv, Wo
                + 2 * 2 * tokens * keys * width  # scores and context over the keys each query sees
                + 2 * tokens * width * 2 * ffn + 2 * tokens * ffn * width)  # Wi (value and gate), Wo
    assert model_flops(config, [tokens]) == layer(tokens, tokens) + 2 * layer(tokens, 129)  # window 64 a side
    assert model_flops(config, [100]) == 3 * layer(100, 100)  # shorter than the window: every key, every layer
    assert "6 L H I" in flops_formula(config) and "4 L H I" in flops_formula(BertConfig())
