"""bertfast_kernels.embedding_layer_norm (Triton gathers + sum + LayerNorm) against fp64 and same-dtype torch references."""
from __future__ import annotations

import pytest
import torch

from bertfast_kernels.embedding import embedding_layer_norm, embedding_layer_norm_ref
from bertfast_kernels.launch import row_launch_settings
from tests.helpers import needs_cuda

DTYPES = [torch.float32, torch.float16]
VOCAB, POSITIONS, TYPES = 50, 40, 2
PARAMS = ("word_weight", "position_weight", "token_type_weight", "ln_weight", "ln_bias")


def _params(width: int, dtype: torch.dtype, device: torch.device, vocab: int = VOCAB, positions: int = POSITIONS
            ) -> dict[str, torch.Tensor]:
    """The keyword arguments word_weight (V, N), position_weight (P, N), token_type_weight (T, N), ln_weight (N,),
    ln_bias (N,) in ``dtype``; word row 0 is zero, like a padding_idx row."""
    word, position, token_type = (torch.randn(rows, width, device=device) for rows in (vocab, positions, TYPES))
    word[0] = 0
    ln_weight, ln_bias = 1 + 0.5 * torch.randn(width, device=device), 0.5 * torch.randn(width, device=device)
    return {name: t.to(dtype) for name, t in zip(PARAMS, (word, position, token_type, ln_weight, ln_bias))}


def _ids(batch: int, seq_len: int, device: torch.device, high: int = VOCAB) -> torch.Tensor:
    """(B, S) int64 ids in [0, high), id 0 (padding) in every row's tail."""
    ids = torch.randint(1, high, (batch, seq_len), device=device)
    ids[:, seq_len // 2 + 1:] = 0
    return ids


def _check(check_error, params, ids, token_type_ids=None, position_ids=None, what: str = "", eps: float = 1e-12):
    """Kernel vs torch same dtype vs fp64 reference; returns the kernel output."""
    extra = dict(eps=eps, token_type_ids=token_type_ids, position_ids=position_ids)
    out = embedding_layer_norm(ids, **params, **extra)
    out_torch = embedding_layer_norm_ref(ids, **params, **extra)
    out_ref = embedding_layer_norm_ref(ids, **{k: p.double() for k, p in params.items()}, **extra)
    check_error(out, out_torch, out_ref, what)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", [32, 96, 130])
@pytest.mark.parametrize("seq_len", [1, 7, 33])
def test_all_ids_given(seq_len, width, dtype, device, check_error):
    params = _params(width, dtype, device)
    ids = _ids(3, seq_len, device)
    token_types = torch.randint(0, TYPES, ids.shape, device=device)
    positions = torch.randint(0, POSITIONS, ids.shape, device=device)
    _check(check_error, params, ids, token_types, positions, f"S={seq_len} N={width}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("given", ["neither", "token_types", "positions"])
def test_default_token_types_and_positions(given, dtype, device, check_error):
    """Absent ids mean token type 0 and positions 0..S-1, exactly as passing them explicitly."""
    params = _params(96, dtype, device)
    ids = _ids(2, 33, device)
    token_types = torch.randint(0, TYPES, ids.shape, device=device) if given == "token_types" else None
    positions = torch.randint(0, POSITIONS, ids.shape, device=device) if given == "positions" else None
    out = _check(check_error, params, ids, token_types, positions, given)
    explicit_types = torch.zeros_like(ids) if token_types is None else token_types
    explicit_positions = torch.arange(33, device=device).expand(2, 33) if positions is None else positions
    torch.testing.assert_close(out, embedding_layer_norm(ids, **params, token_type_ids=explicit_types,
                                                                position_ids=explicit_positions),
                               rtol=0, atol=0)


def test_broadcast_strided_and_narrow_ids(device, check_error):
    """(1, S) positions broadcast over the batch; int32 ids and token types, ids a column slice of a wider tensor."""
    params = _params(32, torch.float32, device)
    ids = _ids(4, 20, device).to(torch.int32)[:, 3:17]  # (4, 14), row stride 20
    assert not ids.is_contiguous()
    positions = torch.randint(0, POSITIONS, (1, 14), device=device)
    token_types = torch.randint(0, TYPES, (4, 14), device=device).to(torch.int32)
    _check(check_error, params, ids, token_types, positions, "broadcast / strided")


def test_padding_row_gives_layer_norm_of_the_other_two(device):
    """A padding id reads the zero row: the output is LayerNorm(token_type + position)."""
    params = _params(32, torch.float32, device)
    ids = torch.zeros(1, 5, dtype=torch.long, device=device)
    out = embedding_layer_norm(ids, **params, eps=1e-5)
    expected = torch.nn.functional.layer_norm(params["token_type_weight"][0] + params["position_weight"][:5], (32,),
                                              params["ln_weight"], params["ln_bias"], 1e-5)
    torch.testing.assert_close(out[0], expected)


def test_backward_is_the_reference(device, leaf):
    """Gradients come from the reference through autograd, padding_idx's row included (none)."""
    params = _params(32, torch.float32, device)
    ids = _ids(2, 7, device)
    positions = torch.randint(0, POSITIONS, ids.shape, device=device)
    dy = torch.randn(2, 7, 32, device=device)
    grads = []
    for fn in (embedding_layer_norm, embedding_layer_norm_ref):
        leaves = {k: leaf(p) for k, p in params.items()}
        out = fn(ids, **leaves, position_ids=positions, padding_idx=0)
        grads.append(torch.autograd.grad(out, list(leaves.values()), dy))
    for g, g_ref in zip(*grads):
        torch.testing.assert_close(g, g_ref)
    assert grads[0][0][0].abs().max() == 0, "the padding row gets no gradient"
    assert grads[0][0][ids[0, 0]].abs().max() > 0


def test_empty_batch(device):
    params = _params(32, torch.float32, device)
    assert embedding_layer_norm(torch.zeros(0, 5, dtype=torch.long, device=device), **params).shape == (0, 5, 32)


def test_bad_input(device):
    params = _params(32, torch.float32, device)
    ids = _ids(2, 7, device)
    with pytest.raises(TypeError, match="input_ids must be an int64 or int32 tensor"):
        embedding_layer_norm(ids.float(), **params)
    with pytest.raises(ValueError, match=r"input_ids must be \(B, S\)"):
        embedding_layer_norm(ids[0], **params)
    with pytest.raises(ValueError, match="position_ids .* does not broadcast"):
        embedding_layer_norm(ids, **params, position_ids=ids[:, :3])
    with pytest.raises(TypeError, match="token_type_ids must be an int64 or int32 tensor"):
        embedding_layer_norm(ids, **params, token_type_ids=ids.to(torch.uint8))
    with pytest.raises(ValueError, match="position_weight must be"):
        embedding_layer_norm(ids, **{**params, "position_weight": params["position_weight"][:, :16]})
    with pytest.raises(TypeError, match="share one dtype"):
        embedding_layer_norm(ids, **{**params, "position_weight": params["position_weight"].half()})
    with pytest.raises(ValueError, match="ln_bias"):
        embedding_layer_norm(ids, **{**params, "ln_bias": params["ln_bias"][:16]})


def test_without_triton(check_without_triton):
    """The reference imports and runs without Triton; the kernel raises a RuntimeError naming the fix."""
    check_without_triton(
        "from bertfast_kernels.embedding import embedding_layer_norm, embedding_layer_norm_ref\n"
        "ids, w, p, t = torch.tensor([[3, 1]]), torch.randn(5, 4), torch.randn(8, 4), torch.randn(2, 4)\n"
        "kw = dict(word_weight=w, position_weight=p, token_type_weight=t, ln_weight=torch.ones(4), "
        "ln_bias=torch.zeros(4))\n"
        "expected = torch.nn.functional.layer_norm(w[ids] + t[0] + p[:2], (4,), kw['ln_weight'], kw['ln_bias'], 1e-12)",
        ["torch.testing.assert_close(embedding_layer_norm_ref(ids, **kw), expected)"],
        ["embedding_layer_norm(ids, **kw)"],
    )


def test_compiles_for_gpu(compile_for_gpu):
    """Lowered to sm_80 and sm_90 code (no GPU needed): bf16 at bert-base width with int64 ids and fp32
    LayerNorm parameters, fp16 at width 96 with int32 ids and default token types / positions."""
    variants = []
    for dtype, width, ids, given in (("bf16", 768, "i64", True), ("fp16", 96, "i32", False)):
        cfg = row_launch_settings(width, whole_row=True)
        types = {name: f"*{ids}" for name in ("ids_ptr", "type_ids_ptr", "pos_ids_ptr")}
        types.update({"eps": "fp32", **({"w_ptr": "*fp32", "b_ptr": "*fp32"} if dtype == "bf16" else {})})
        constexprs = {"HAS_TYPE_IDS": given, "HAS_POSITION_IDS": given, "BLOCK_M": cfg.block_rows,
                      "BLOCK_N": cfg.block_cols}
        variants.append({"dtype": dtype, "types": types, "constexprs": constexprs, "num_warps": cfg.num_warps})
    result = compile_for_gpu("bertfast_kernels.embedding", "_embedding_layer_norm_fwd_kernel", variants)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled 4"


@needs_cuda
@pytest.mark.parametrize("token_types", [True, False], ids=["token_types", "no_token_types"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_bert_base(dtype, token_types, check_error):
    """bert-base-uncased's tables (30522 x 768, 512 positions) on a (32, 128) batch."""
    device = torch.device("cuda")
    params = _params(768, dtype, device, vocab=30522, positions=512)
    ids = _ids(32, 128, device, high=30522)
    types = torch.randint(0, TYPES, ids.shape, device=device) if token_types else None
    _check(check_error, params, ids, types, None, f"bert-base {dtype}")


def test_tables_are_keyword_only(device):
    """The three tables share (rows, N) shapes: a positional call that could swap them is refused."""
    params = _params(32, torch.float32, device, vocab=TYPES, positions=TYPES)
    with pytest.raises(TypeError, match="positional"):
        embedding_layer_norm(_ids(1, 2, device, high=TYPES), *params.values())
    with pytest.raises(TypeError, match="positional"):
        embedding_layer_norm_ref(_ids(1, 2, device, high=TYPES), *params.values())
