"""The sliding window of bertfast_kernels.attention (ModernBERT's local layers): the Triton kernel against the dense
band and fp64 references, the linear-memory windowed reference (bertfast_kernels.attention_ref), the key blocks the
kernel visits, and the GPU versions."""
from __future__ import annotations

import pytest
import torch

import bertfast_kernels.attention_ref as reference_module
from bertfast_kernels.attention import (REF_CHUNK, attention, attention_ref, key_block_range, varlen_attention,
                                        varlen_attention_ref)
from bertfast_kernels.launch import attention_launch_settings
from tests.helpers import needs_cuda
from tests.kernels.test_attention import DTYPES, _check, _packed, _qkv, _random_mask

EDGE_LENGTHS = [1, 4, 5, 9, 33, 130, 257]  # around the (4, 4) and (16, 16) window edges, several key blocks


def _dense_varlen(q, k, v, cu_seqlens, max_seqlen, scale, window):
    """The dense masked computation, one sequence at a time: ``attention_ref`` with its (L, L) band mask."""
    bounds = cu_seqlens.tolist()
    seqs = [[t[b:e].transpose(0, 1)[None] for t in (q, k, v)] for b, e in zip(bounds[:-1], bounds[1:])]
    outs = [attention_ref(*seq, scale=scale, window=window)[0].transpose(0, 1) for seq in seqs]  # (L, H, D) each
    return torch.cat(outs)  # (T, H, D)


def _check_varlen_window(check_error, leaf, lengths, window, dtype, device, backward=False):
    qkv, cu_seqlens = _packed(lengths, 2, 16, dtype, device)
    return _check(
        check_error, leaf, qkv, (cu_seqlens, max(lengths), None, window), f"lengths {lengths} window {window}",
        backward=backward, kernel=varlen_attention, exact=_dense_varlen,
        reference=lambda q, k, v, cu, _, scale, w: varlen_attention_ref(q, k, v, cu, scale, w),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("window", [(4, 4), (16, 16)], ids=str)
def test_varlen_window(window, dtype, device, check_error, leaf):
    """Kernel and the linear-memory reference against the dense fp64 masked computation, gradients too."""
    lengths = EDGE_LENGTHS[::2] + EDGE_LENGTHS[1::2]  # mixed order: 1, 5, 33, 257, 4, 9, 130
    _check_varlen_window(check_error, leaf, lengths, window, dtype, device, backward=True)


@pytest.mark.parametrize("window", [(0, 0), (0, 5), (9, 2), (70, 1)], ids=str)
def test_varlen_asymmetric_window(window, device, check_error, leaf):
    _check_varlen_window(check_error, leaf, [3, 70, 130], window, torch.float32, device)


def test_window_covering_the_sequence_is_no_window(device):
    (q, k, v), cu_seqlens = _packed([5, 33, 130], 2, 16, torch.float32, device)
    plain = varlen_attention(q, k, v, cu_seqlens, 130)
    for window in [(129, 129), (1000, 200)]:
        assert torch.equal(varlen_attention(q, k, v, cu_seqlens, 130, window=window), plain)
        assert torch.equal(varlen_attention_ref(q, k, v, cu_seqlens, window=window),
                           varlen_attention_ref(q, k, v, cu_seqlens))
    qkv, mask = _qkv(2, 2, 40, 16, torch.float32, device), _random_mask(2, 40, device)
    assert torch.equal(attention(*qkv, mask, window=(39, 39)), attention(*qkv, mask))
    assert torch.equal(attention_ref(*qkv, mask, window=(50, 39)), attention_ref(*qkv, mask))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("window", [(4, 4), (16, 3)], ids=str)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_window(side, window, dtype, device, check_error, leaf):
    """Padded layout, 150 keys (three blocks), band on padded row indices and key padding; padding queries'
    outputs are unspecified (the model zeroes them), so both sides zero them before comparing."""
    lengths = torch.tensor([150, 97, 20])
    positions = torch.arange(150)[None, :]
    mask = positions < lengths[:, None] if side == "right" else positions >= 150 - lengths[:, None]  # (B, S)
    mask = mask.to(device)

    def real_rows(fn):
        return lambda q, k, v, m: torch.where(m[:, None, :, None], fn(q, k, v, m, window=window), 0.0)

    qkv = _qkv(3, 2, 150, 32, dtype, device)
    _check(check_error, leaf, qkv, (mask,), f"{side} padded {window}", backward=True,
           kernel=real_rows(attention), reference=real_rows(attention_ref))


def test_window_weights_equal_transformers_eager():
    """need_weights=True: the probabilities and output of transformers' eager attention with its sliding-window
    and padding mask (ModernBERT, local_attention 8 -> window (4, 4)), left padding included."""
    from transformers import ModernBertConfig
    from transformers.masking_utils import create_bidirectional_sliding_window_mask
    from transformers.models.modernbert.modeling_modernbert import eager_attention_forward

    config = ModernBertConfig(hidden_size=64, num_attention_heads=4, local_attention=8)
    config._attn_implementation = "eager"
    q, k, v = _qkv(2, 4, 21, 16, torch.float32, torch.device("cpu"))
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[0, 15:], mask[1, :6] = False, False
    hf_mask = create_bidirectional_sliding_window_mask(config, torch.zeros(2, 21, 64), mask.long())
    hf_out, hf_probs = eager_attention_forward(torch.nn.Module().eval(), q, k, v, hf_mask, 16**-0.5)
    out, probs = attention_ref(q, k, v, mask, need_weights=True, window=(4, 4))
    torch.testing.assert_close(probs, hf_probs, rtol=0, atol=0)
    torch.testing.assert_close(out.transpose(1, 2), hf_out, rtol=0, atol=0)


def test_windowed_ref_is_blockwise_and_exact():
    """fp64: the reference's blocks of REF_CHUNK queries (sequences crossing block edges) equal the dense band."""
    lengths = [100, 300, 1, 200, 17]
    (q, k, v), cu_seqlens = _packed(lengths, 2, 8, torch.float64, torch.device("cpu"))
    for window in [(64, 64), (3, 40), (0, 0)]:
        torch.testing.assert_close(varlen_attention_ref(q, k, v, cu_seqlens, window=window),
                                   _dense_varlen(q, k, v, cu_seqlens, 300, None, window), rtol=1e-12, atol=1e-12)


def test_windowed_ref_memory_is_linear(monkeypatch):
    """L = 4096, window (64, 64): every SDPA call of the reference gets keys and masks at most C + 128 long
    (no (L, L) scores), and its output matches the per-sequence band on a few rows computed directly."""
    calls = []
    sdpa = reference_module.F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(k.shape), None if attn_mask is None else tuple(attn_mask.shape)))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(reference_module.F, "scaled_dot_product_attention", recording)
    (q, k, v), cu_seqlens = _packed([4096], 2, 16, torch.float32, torch.device("cpu"))
    out = varlen_attention_ref(q, k, v, cu_seqlens, window=(64, 64))
    assert calls and all(keys[-2] <= REF_CHUNK + 128 and mask[-1] <= REF_CHUNK + 128 for keys, mask in calls), calls
    for row in (0, 63, 2000, 4095):
        keys = slice(max(0, row - 64), row + 65)
        probs = torch.softmax(k[keys].transpose(0, 1) @ q[row, :, :, None] / 4, dim=1)  # (H, K, 1)
        torch.testing.assert_close(out[row], (probs * v[keys].transpose(0, 1)).sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_m, block_n", [(16, 16), (64, 64), (128, 64), (32, 16)])
def test_key_block_range_visits_exactly_the_band_blocks(block_m, block_n):
    """The kernel's loop bounds (``key_block_range``, plain Python here) against brute force: the visited key
    blocks are those holding a key of some query's band, no others."""
    for seqlen_q, seqlen_k in [(1, 1), (130, 130), (257, 257), (40, 90)]:
        for left, right in [(0, 0), (4, 4), (16, 16), (64, 64), (3, 50), (200, 0)]:
            for q_start in range(0, seqlen_q, block_m):
                lo, hi = key_block_range.fn(q_start, seqlen_q, seqlen_k, left, right, block_m, block_n)
                queries = range(q_start, min(q_start + block_m, seqlen_q))
                keys = {j for i in queries for j in range(max(0, i - left), min(seqlen_k, i + right + 1))}
                assert lo % block_n == 0
                assert set(range(lo, hi, block_n)) == {j // block_n * block_n for j in keys}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_never_loads_keys_outside_the_band(dtype, device):
    """NaN in every key and value before the first key block that the query block at 128 visits and from the
    end of its band on: that block's outputs stay bit-identical (a loop over all keys with a mask after the fact
    would turn them NaN: 0 * NaN in P @ V)."""
    (q, k, v), cu_seqlens = _packed([400], 2, 16, dtype, device)
    cfg = attention_launch_settings(16, 400, q.element_size())
    q_start = 128  # a query block (64 or 128 rows) whose band [124, 128 + BLOCK_M + 4) lies inside the sequence
    lo, hi = key_block_range.fn(q_start, 400, 400, 4, 4, cfg.block_rows, cfg.block_cols)
    assert (lo, hi) == (64, q_start + cfg.block_rows + 4)
    before = varlen_attention(q, k, v, cu_seqlens, 400, window=(4, 4))
    outside = torch.ones(400, dtype=torch.bool, device=device)
    outside[lo:hi] = False
    poisoned = [torch.where(outside[:, None, None], float("nan"), t) for t in (k, v)]
    after = varlen_attention(q, *poisoned, cu_seqlens, 400, window=(4, 4))
    rows = slice(q_start, q_start + cfg.block_rows)
    assert torch.isfinite(after[rows]).all() and torch.equal(after[rows], before[rows])
    assert torch.isnan(after[:64]).all()  # the poison does reach the query blocks whose bands it meets


def test_bad_window(device):
    (q, k, v), cu_seqlens = _packed([5, 7], 2, 16, torch.float32, device)
    for window in [(-1, 2), (1,), 3, (1.5, 2)]:
        with pytest.raises(ValueError, match="window"):
            varlen_attention(q, k, v, cu_seqlens, 7, window=window)
        with pytest.raises(ValueError, match="window"):
            varlen_attention_ref(q, k, v, cu_seqlens, window=window)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_varlen_window_modernbert(dtype, check_error, leaf):
    """ModernBERT-base's local layers: H=12, D=64, window (64, 64), sequences up to 2048 tokens."""
    lengths = [2048, 512, 1, 65, 129, 1000]
    qkv, cu_seqlens = _packed(lengths, 12, 64, dtype, torch.device("cuda"))
    _check(check_error, leaf, qkv, (cu_seqlens, max(lengths), None, (64, 64)), "modernbert local", backward=True,
           kernel=varlen_attention, reference=lambda q, k, v, cu, _, s, w: varlen_attention_ref(q, k, v, cu, s, w))


@needs_cuda
def test_gpu_padded_window_bf16(check_error, leaf):
    device = torch.device("cuda")
    mask = _random_mask(8, 512, device)
    mask[:, :5] = True
    qkv = _qkv(8, 12, 512, 64, torch.bfloat16, device)
    _check(check_error, leaf, qkv, (torch.ones_like(mask),), "padded window bf16",
           kernel=lambda q, k, v, m: attention(q, k, v, m, window=(64, 64)),
           reference=lambda q, k, v, m: attention_ref(q, k, v, m, window=(64, 64)))
