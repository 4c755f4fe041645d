"""bertfast_kernels.attention (Triton) against fp64 and same-dtype torch references (bertfast_kernels.attention_ref)."""
from __future__ import annotations

import random
from typing import Callable

import pytest
import torch

from bertfast_kernels.attention import attention, attention_ref, varlen_attention, varlen_attention_ref
from bertfast_kernels.launch import attention_launch_settings
from tests.helpers import needs_cuda

DTYPES = [torch.float32, torch.float16]


def _qkv(
    batch: int, heads: int, seqlen: int, head_dim: int, dtype: torch.dtype, device: torch.device, fused: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, S, D); with ``fused``, non-contiguous views into one (B, S, 3, H, D) projection."""
    if not fused:
        return tuple(torch.randn(batch, heads, seqlen, head_dim, device=device).to(dtype) for _ in range(3))
    qkv = torch.randn(batch, seqlen, 3, heads, head_dim, device=device).to(dtype)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, S, D)


def _random_mask(batch: int, seqlen: int, device: torch.device, rng: torch.Generator | None = None) -> torch.Tensor:
    """(B, S) bool, about 30% padding at random positions, at least one real key per sequence."""
    mask = torch.rand(batch, seqlen, generator=rng) > 0.3
    mask[torch.arange(batch), torch.randint(seqlen, (batch,), generator=rng)] = True
    return mask.to(device)


def _run(
    leaf: Callable[[torch.Tensor], torch.Tensor],
    fn: Callable[..., torch.Tensor],
    qkv: tuple[torch.Tensor, ...],
    extra: tuple,
    do: torch.Tensor | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``fn(q, k, v, *extra)`` on same-strided leaf copies; with ``do``, also [dq, dk, dv]."""
    leaves = [leaf(t) for t in qkv]
    out = fn(*leaves, *extra)
    return out, [] if do is None else list(torch.autograd.grad(out, leaves, do))


def _check(
    check_error,
    leaf,
    qkv: tuple[torch.Tensor, ...],
    extra: tuple,
    what: str,
    backward: bool = False,
    kernel: Callable[..., torch.Tensor] = attention,
    reference: Callable[..., torch.Tensor] = attention_ref,
    exact: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Kernel vs torch same dtype vs fp64 reference (``exact``, default ``reference``, on fp64 copies) and the
    gradients; returns the kernel output."""
    q = qkv[0]
    do = torch.randn(q.shape, device=q.device).to(q.dtype) if backward else None
    out, grads = _run(leaf, kernel, qkv, extra, do)
    out_torch, grads_torch = _run(leaf, reference, qkv, extra, do)
    qkv64 = tuple(t.double() for t in qkv)
    out_ref, grads_ref = _run(leaf, exact or reference, qkv64, extra, None if do is None else do.double())
    check_error(out, out_torch, out_ref, f"{what} output")
    for name, g, g_torch, g_ref in zip(["dq", "dk", "dv"], grads, grads_torch, grads_ref):
        check_error(g, g_torch, g_ref, f"{what} {name}")
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seqlen", [1, 7, 33, 130])
def test_padded_batch(seqlen, dtype, device, check_error, leaf):
    qkv = _qkv(2, 3, seqlen, 64, dtype, device)
    mask = _random_mask(2, seqlen, device)
    _check(check_error, leaf, qkv, (mask,), f"S={seqlen}", backward=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [4, 16, 32, 64, 128])
def test_head_dims(head_dim, dtype, device, check_error, leaf):
    qkv = _qkv(2, 2, 33, head_dim, dtype, device)
    _check(check_error, leaf, qkv, (_random_mask(2, 33, device),), f"D={head_dim}")


@pytest.mark.parametrize("pattern", ["left", "right", "middle", "alternate"])
def test_padding_anywhere(pattern, device, check_error, leaf):
    """Padding patterns over 150 keys (three key blocks): "left" pads the whole first block."""
    positions = torch.arange(150)
    real = {
        "left": positions >= 70,
        "right": positions < 27,
        "middle": (positions < 10) | (positions >= 100),
        "alternate": positions % 2 == 0,
    }[pattern]
    mask = torch.stack([real, torch.ones_like(real)]).to(device)  # (2, 150): one padded, one full sequence
    _check(check_error, leaf, _qkv(2, 2, 150, 32, torch.float16, device), (mask,), pattern)


@pytest.mark.parametrize("seed", range(12))
def test_randomized(seed, device, check_error, leaf):
    """Random shapes, dtypes, layouts, masks and scales against the reference."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, heads, seqlen = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 80)
    head_dim, dtype = rng.choice([16, 32, 64]), rng.choice(DTYPES)
    qkv = _qkv(batch, heads, seqlen, head_dim, dtype, device, fused=rng.random() < 0.5)
    mask = _random_mask(batch, seqlen, device, gen) if rng.random() < 0.75 else None
    scale = rng.uniform(0.05, 0.5) if rng.random() < 0.5 else None
    _check(check_error, leaf, qkv, (mask, scale), f"seed {seed}: B={batch} H={heads} S={seqlen} D={head_dim} {dtype}")


def test_query_and_key_lengths_differ(device, check_error, leaf):
    q = _qkv(2, 3, 7, 32, torch.float32, device)[0]
    k, v = _qkv(2, 3, 33, 32, torch.float32, device)[1:]
    _check(check_error, leaf, (q, k, v), (_random_mask(2, 33, device),), "S_q=7 S_k=33", backward=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_padding_row_averages_values(dtype, device, check_error):
    """A sequence with no real key: each query outputs the uniform mean of that sequence's values.

    130 keys span three key blocks, so the uniform average is accumulated across blocks.
    """
    q, k, v = _qkv(2, 3, 130, 32, dtype, device)
    mask = _random_mask(2, 130, device)
    mask[1] = False
    out = attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    mean_v = v[1].double().mean(dim=1, keepdim=True).expand(3, 130, 32)  # (H, S, D)
    eager = attention_ref(q, k, v, mask, need_weights=True)[0]  # transformers' eager path, same dtype
    check_error(out[1], eager[1], mean_v, "all-padding sequence")
    check_error(out[0], eager[0], attention_ref(q.double(), k.double(), v.double(), mask)[0], "its neighbour")


def test_padded_keys_get_exactly_zero_weight(device):
    """Garbage in padded keys and values leaves the output bit for bit unchanged, the first key block
    of sequence 0 being all padding (its running sum is then rescaled to exactly zero)."""
    q, k, v = _qkv(2, 2, 130, 32, torch.float16, device, fused=False)
    mask = _random_mask(2, 130, device)
    mask[0, :64] = False
    before = attention(q, k, v, mask)
    padded = ~mask[:, None, :, None]  # (B, 1, S, 1)
    k2 = torch.where(padded, 1000 * torch.randn_like(k), k)
    v2 = torch.where(padded, 1000 * torch.randn_like(v), v)
    assert torch.equal(attention(q, k2, v2, mask), before)


def test_without_mask_and_explicit_scale(device, check_error, leaf):
    qkv = _qkv(2, 3, 33, 64, torch.float32, device)
    _check(check_error, leaf, qkv, (None, 0.3), "no mask, scale 0.3", backward=True)


def test_output_merges_heads_without_copy(device):
    out = attention(*_qkv(2, 3, 7, 16, torch.float32, device))
    assert out.shape == (2, 3, 7, 16)
    assert out.transpose(1, 2).is_contiguous()  # (B, S, H, D): .reshape(B, S, H * D) is a view


def _packed(
    lengths: list[int], heads: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Packed q, k, v (T, H, D) as views into one (T, 3, H, D) projection, and cu_seqlens (B + 1,) int32."""
    cu_seqlens = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32).to(device)
    qkv = torch.randn(sum(lengths), 3, heads, head_dim, device=device).to(dtype)
    return qkv.unbind(1), cu_seqlens  # 3 x (T, H, D)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_varlen_matches_padded(dtype, device, check_error, leaf):
    lengths = [5, 0, 33, 1, 17]
    (q, k, v), cu_seqlens = _packed(lengths, 2, 32, dtype, device)
    out = _check(
        check_error, leaf, (q, k, v), (cu_seqlens, max(lengths)), "varlen", backward=True,
        kernel=varlen_attention, reference=lambda *a: varlen_attention_ref(*a[:4]),
    )
    batch, seqlen = len(lengths), max(lengths)
    mask = torch.arange(seqlen, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]  # (B, S)
    rows = mask.flatten().nonzero().squeeze(1)  # (T,) token positions in the flattened (B * S) grid
    padded = []
    for t in (q, k, v):
        grid = t.new_zeros(batch * seqlen, *t.shape[1:])  # (B * S, H, D)
        grid[rows] = t
        padded.append(grid.view(batch, seqlen, *t.shape[1:]).transpose(1, 2))  # (B, H, S, D)
    out_padded = attention(*padded, mask).transpose(1, 2).reshape(batch * seqlen, *q.shape[1:])  # (B * S, H, D)
    tol = {torch.float32: 1e-6, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(out, out_padded[rows], rtol=tol, atol=tol)


def test_varlen_single_sequence_equals_attention(device):
    (q, k, v), cu_seqlens = _packed([33], 3, 64, torch.float32, device)
    out = varlen_attention(q, k, v, cu_seqlens, 33)  # (T, H, D)
    expected = attention(*(t.transpose(0, 1)[None] for t in (q, k, v)))[0].transpose(0, 1)  # (T, H, D)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_varlen_bad_input(device):
    (q, k, v), cu_seqlens = _packed([5, 7], 2, 16, torch.float32, device)
    with pytest.raises(ValueError, match="int32"):
        varlen_attention(q, k, v, cu_seqlens.long(), 7)
    with pytest.raises(ValueError, match="rise from 0 to 12"):
        varlen_attention(q, k, v, cu_seqlens[:2], 7)
    with pytest.raises(ValueError, match="rise from 0"):
        varlen_attention(q, k, v, cu_seqlens.flip(0), 7)
    with pytest.raises(ValueError, match="longer than max_seqlen"):
        varlen_attention(q, k, v, cu_seqlens, 6)
    with pytest.raises(ValueError, match="must match on axes THD"):
        varlen_attention(q, k[:11], v[:11], cu_seqlens, 7)
    with pytest.raises(ValueError, match="THD"):
        varlen_attention(q[None], k[None], v[None], cu_seqlens, 7)


def test_bad_input(device):
    q, k, v = _qkv(2, 3, 7, 32, torch.float32, device)
    mask = _random_mask(2, 7, device)
    with pytest.raises(ValueError, match="BHSD"):
        attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="shapes differ"):
        attention(q, k, v[:, :2])
    with pytest.raises(ValueError, match="must match on axes BHD"):
        attention(q[:, :2], k, v)
    with pytest.raises(ValueError, match=r"\(B, S_k\)"):
        attention(q, k, v, mask[:, :6])
    with pytest.raises(TypeError, match="torch.bool"):
        attention(q, k, v, mask.long())
    with pytest.raises(TypeError, match="one dtype"):
        attention(q, k.half(), v)
    with pytest.raises(TypeError, match="one dtype"):
        attention(q.double(), k.double(), v.double())
    for head_dim in (48, 256):
        bad = _qkv(1, 1, 7, head_dim, torch.float32, device)
        with pytest.raises(ValueError, match="power of two"):
            attention(*bad)


def test_without_triton(check_without_triton):
    """The references import and run without Triton; both kernels raise a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.attention import attention, attention_ref, varlen_attention, varlen_attention_ref\n"
        "q = torch.randn(1, 2, 5, 16)\n"
        "x = q[0].transpose(0, 1)  # packed (T, H, D)\n"
        "cu = torch.tensor([0, 5], dtype=torch.int32)\n"
        "expected = torch.nn.functional.scaled_dot_product_attention(q, q, q)",
        ["torch.testing.assert_close(attention_ref(q, q, q), expected)",
         "torch.testing.assert_close(varlen_attention_ref(x, x, x, cu), expected[0].transpose(0, 1))",
         "assert varlen_attention_ref(x, x, x, cu, window=(1, 1)).shape == x.shape"],
        ["attention(q, q, q)", "varlen_attention(x, x, x, cu, 5)"],
    )


def test_compiles_for_gpu(compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): fp16 D=64 with a mask at S=512, bf16 D=128 varlen,
    fp32 D=32 with IEEE dots, fp16 D=4 zero-padded to 16; with a window: bf16 / fp16 D=64 varlen (ModernBERT's
    local layers) and fp32 D=32 padded with a mask."""
    variants = []
    cases = (("fp16", 64, 512, True, False, False), ("bf16", 128, 512, False, True, False),
             ("fp32", 32, 128, True, False, False), ("fp16", 4, 7, True, False, False),
             ("bf16", 64, 8192, False, True, True), ("fp16", 64, 512, False, True, True),
             ("fp32", 32, 128, True, False, True))
    for dtype, head_dim, seqlen, has_mask, varlen, window in cases:
        block_d = max(16, head_dim)
        cfg = attention_launch_settings(block_d, seqlen, 4 if dtype == "fp32" else 2)
        constexprs = {
            "HEAD_DIM": head_dim, "BLOCK_D": block_d, "BLOCK_M": cfg.block_rows, "BLOCK_N": cfg.block_cols,
            "HAS_MASK": has_mask, "VARLEN": varlen, "HAS_WINDOW": window,
            "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
        }
        types = {"mask_ptr": "*u8", "cu_seqlens_ptr": "*i32", "qk_scale": "fp32"}
        variants.append({"dtype": dtype, "types": types, "constexprs": constexprs, "num_warps": cfg.num_warps})
    result = compile_for_gpu("bertfast_kernels.attention", "_attention_fwd_kernel", variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 14"


@needs_cuda
@pytest.mark.parametrize("seqlen", [128, 512])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_gpu_bert_base(dtype, seqlen, check_error, leaf):
    device = torch.device("cuda")
    qkv = _qkv(32, 12, seqlen, 64, dtype, device)
    _check(check_error, leaf, qkv, (_random_mask(32, seqlen, device),), f"bert-base S={seqlen}", backward=True)


@needs_cuda
def test_gpu_varlen_bf16(check_error, leaf):
    lengths = [random.randint(1, 512) for _ in range(32)]
    qkv, cu_seqlens = _packed(lengths, 12, 64, torch.bfloat16, torch.device("cuda"))
    _check(
        check_error, leaf, qkv, (cu_seqlens, max(lengths)), "varlen bf16",
        kernel=varlen_attention, reference=lambda *a: varlen_attention_ref(*a[:4]),
    )


# ---- sliding window (ModernBERT's local layers: (64, 64)) ----
