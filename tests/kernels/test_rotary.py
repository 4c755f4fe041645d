"""bertfast_kernels.rotary_qkv (Triton, forward and backward) against fp64 and same-dtype torch references,
and rotary_qkv_ref against transformers' ModernBERT rotary embedding."""
from __future__ import annotations

import pytest
import torch

from bertfast_kernels.launch import row_launch_settings
from bertfast_kernels.rotary import rotary_qkv, rotary_qkv_ref
from tests.helpers import needs_cuda

DTYPES = [torch.float32, torch.float16]
HEADS = {1: 1, 7: 2, 130: 3, 257: 4}  # tokens -> heads


def _packed_positions(n_tokens: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """(N,) int64 positions of a packed batch: restarting at ``offset`` for each sequence of 1 to 60 tokens."""
    positions, start = [], 0
    while start < n_tokens:
        length = min(int(torch.randint(1, 61, ())), n_tokens - start)
        positions.append(torch.arange(offset, offset + length))
        start += length
    return torch.cat(positions).to(device)


def _qkv(n_tokens: int, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(N, 3, H, D): a strided view into the (N, 3 H D + 5) output of a projection (row stride 3 H D + 5)."""
    out = (2 * torch.randn(n_tokens, 3 * heads * head_dim + 5, device=device)).to(dtype)
    return out[:, 5:].view(n_tokens, 3, heads, head_dim)


def _run(leaf, fn, qkv, positions, theta, grad):
    x = leaf(qkv)
    out = fn(x, positions, theta)
    return out, [] if grad is None else list(torch.autograd.grad(out, [x], grad))


def _check(check_error, leaf, qkv, positions, theta, what, backward=True):
    """Kernel vs torch same dtype vs fp64 reference, the gradient too; the value block must be copied exactly."""
    grad = torch.randn(qkv.shape, device=qkv.device).to(qkv.dtype) if backward else None
    out, grads = _run(leaf, rotary_qkv, qkv, positions, theta, grad)
    out_torch, grads_torch = _run(leaf, rotary_qkv_ref, qkv, positions, theta, grad)
    out_ref, grads_ref = _run(leaf, rotary_qkv_ref, qkv.double(), positions, theta,
                              None if grad is None else grad.double())
    assert out.is_contiguous() and torch.equal(out[:, 2], qkv[:, 2]), f"{what}: value block changed"
    check_error(out, out_torch, out_ref, f"{what} output")
    for g, g_torch, g_ref in zip(grads, grads_torch, grads_ref):
        check_error(g, g_torch, g_ref, f"{what} dqkv")
        assert torch.equal(g[:, 2], grad[:, 2]), f"{what}: value gradient changed"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [8, 16, 24, 64])
@pytest.mark.parametrize("n_tokens", [1, 7, 130, 257])
def test_packed_positions(n_tokens, head_dim, dtype, device, check_error, leaf):
    qkv = _qkv(n_tokens, HEADS[n_tokens], head_dim, dtype, device)
    _check(check_error, leaf, qkv, _packed_positions(n_tokens, device), 160000.0, f"N={n_tokens} D={head_dim}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("theta", [10000.0, 160000.0])
def test_large_positions(theta, dtype, device, check_error, leaf):
    """Positions near 8000 (ModernBERT's 8192 context), where angle and range-reduction errors show."""
    qkv = _qkv(130, 2, 64, dtype, device)
    positions = torch.cat([_packed_positions(65, device, offset=7900), torch.randint(0, 8192, (65,), device=device)])
    _check(check_error, leaf, qkv, positions, theta, f"theta={theta:g}")


@pytest.mark.parametrize("layout", ["contiguous", "qkv_first", "int32"])
def test_layouts(layout, device, check_error, leaf):
    """A dense (N, 3, H, D), a (3, N, H, D) projection transposed to (N, 3, H, D), and int32 positions."""
    positions = _packed_positions(33, device)
    qkv = (2 * torch.randn(33, 3, 2, 32, device=device))
    if layout == "qkv_first":
        qkv = (2 * torch.randn(3, 33, 2, 32, device=device)).transpose(0, 1)
    if layout == "int32":
        positions = positions.int()
    _check(check_error, leaf, qkv, positions, 10000.0, layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_reference_is_transformers(dtype):
    """rotary_qkv_ref is bit for bit transformers' ModernBertRotaryEmbedding + apply_rotary_pos_emb."""
    from transformers import ModernBertConfig
    from transformers.models.modernbert.modeling_modernbert import ModernBertRotaryEmbedding, apply_rotary_pos_emb

    config = ModernBertConfig(hidden_size=3 * 64, num_attention_heads=3)
    rotary = ModernBertRotaryEmbedding(config)
    qkv = _qkv(130, 3, 64, dtype, torch.device("cpu"))
    positions = torch.cat([torch.arange(100), torch.arange(8000, 8030)])
    for layer_type in ("full_attention", "sliding_attention"):
        cos, sin = rotary(qkv, positions[None], layer_type)  # (1, N, D) in qkv's dtype
        q, k = (qkv[None, :, i].transpose(1, 2) for i in (0, 1))  # (1, H, N, D)
        q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
        out = rotary_qkv_ref(qkv, positions, config.rope_parameters[layer_type]["rope_theta"])
        assert torch.equal(out[:, 0], q_hf[0].transpose(0, 1)) and torch.equal(out[:, 1], k_hf[0].transpose(0, 1))
        assert torch.equal(out[:, 2], qkv[:, 2])


def test_empty_input(device):
    qkv = torch.randn(0, 3, 2, 16, device=device)
    assert rotary_qkv(qkv, torch.zeros(0, dtype=torch.long, device=device), 10000.0).shape == (0, 3, 2, 16)


def test_bad_input(device):
    qkv, positions = torch.randn(4, 3, 2, 16, device=device), torch.arange(4, device=device)
    with pytest.raises(ValueError, match=r"\(N, 3, H, D\)"):
        rotary_qkv(qkv[:, :2], positions, 10000.0)
    with pytest.raises(ValueError, match="even"):
        rotary_qkv(torch.randn(4, 3, 2, 15, device=device), positions, 10000.0)
    with pytest.raises(ValueError, match="<= 256"):
        rotary_qkv(torch.randn(4, 3, 1, 258, device=device), positions, 10000.0)
    with pytest.raises(ValueError, match="position_ids"):
        rotary_qkv(qkv, positions[:3], 10000.0)
    with pytest.raises(ValueError, match="position_ids"):
        rotary_qkv(qkv, positions.float(), 10000.0)
    with pytest.raises(TypeError, match="must be one of"):
        rotary_qkv(qkv.double(), positions, 10000.0)


def test_without_triton(check_without_triton):
    """The reference imports and runs without Triton; the kernel raises a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.rotary import rotary_qkv, rotary_qkv_ref\n"
        "qkv, pos = torch.randn(5, 3, 2, 8), torch.arange(5)",
        ["out = rotary_qkv_ref(qkv, pos, 10000.0)", "assert torch.equal(out[0], qkv[0]) and torch.equal(out[:, 2], qkv[:, 2])"],
        ["rotary_qkv(qkv, pos, 10000.0)"],
    )


def test_compiles_for_gpu(compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): bf16 D=64 (ModernBERT-base), fp16 D=24 backward with
    int32 positions, fp32 D=256."""
    variants = []
    for dtype, head_dim, inverse, pos in (("bf16", 64, False, "*i64"), ("fp16", 24, True, "*i32"),
                                          ("fp32", 256, False, "*i64")):
        cfg = row_launch_settings(head_dim // 2, whole_row=True)
        constexprs = {"HALF": head_dim // 2, "BLOCK_T": cfg.block_rows, "BLOCK_HALF": cfg.block_cols,
                      "INVERSE": inverse}
        types = {"pos_ptr": pos, "inv_freq_ptr": "*fp32"}
        variants.append({"dtype": dtype, "types": types, "constexprs": constexprs, "num_warps": cfg.num_warps})
    result = compile_for_gpu("bertfast_kernels.rotary", "_rotary_kernel", variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 6"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_modernbert_base(dtype, check_error, leaf):
    """ModernBERT-base: 8192 packed tokens, H=12, D=64, both rope bases."""
    device = torch.device("cuda")
    qkv = _qkv(8192, 12, 64, dtype, device)
    for theta in (10000.0, 160000.0):
        _check(check_error, leaf, qkv, _packed_positions(8192, device), theta, f"modernbert-base theta={theta:g}")
