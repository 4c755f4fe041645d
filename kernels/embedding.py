"""BERT's embedding layer, LayerNorm(word[ids] + token_type[tt] + position[pos]): one Triton pass, torch reference.

Each program gathers the three embedding rows of its tokens, sums them in transformers' order,
``(word + token_type) + position``, rounding each sum to the tables' dtype as torch's adds do, and
normalises the sum with fp32 statistics (``normalize_rows`` of kernels/layer_norm.py). The embeddings
are never written to memory before the LayerNorm.

Ids are not range-checked here (that would synchronise the device): an id outside its table reads
memory outside it. Validating them is the caller's job; bertfast does it in ``check_inputs``.

Backward: recomputed through ``embedding_layer_norm_ref`` with torch autograd, so gradients are the
reference's (``padding_idx``'s word row gets none, as with ``nn.Embedding(padding_idx=...)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bertfast_kernels.launch import DTYPES, ID_DTYPES, cdiv, check_launchable, check_vector, jit, row_launch_settings, tl
from bertfast_kernels.layer_norm import normalize_rows


@jit
def _embedding_layer_norm_fwd_kernel(
    ids_ptr,  # (B, S) token ids, strides (stride_ib, stride_is)
    type_ids_ptr,  # (B, S) token type ids, strides (stride_tb, stride_ts) (ignored unless HAS_TYPE_IDS)
    pos_ids_ptr,  # (B, S) position ids, strides (stride_pb, stride_ps) (ignored unless HAS_POSITION_IDS)
    word_ptr,  # (V, N) word embeddings, contiguous
    type_ptr,  # (T, N) token type embeddings, contiguous; row 0 when HAS_TYPE_IDS is False
    pos_ptr,  # (P, N) position embeddings, contiguous; row s for position s when HAS_POSITION_IDS is False
    w_ptr,  # (N,) LayerNorm weight
    b_ptr,  # (N,) LayerNorm bias
    y_ptr,  # (B * S, N) output, contiguous, dtype of the tables
    stride_ib,
    stride_is,
    stride_tb,
    stride_ts,
    stride_pb,
    stride_ps,
    M,  # B * S tokens
    S,
    N,
    eps,
    HAS_TYPE_IDS: tl.constexpr,
    HAS_POSITION_IDS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    tokens = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # flat b * S + s
    cols = tl.arange(0, BLOCK_N)
    token_mask = tokens < M
    col_mask = cols < N
    mask = token_mask[:, None] & col_mask[None, :]
    b = tokens // S
    s = tokens % S
    ids = tl.load(ids_ptr + b * stride_ib + s * stride_is, mask=token_mask, other=0).to(tl.int64)
    type_ids = tl.zeros([BLOCK_M], dtype=tl.int64)
    if HAS_TYPE_IDS:
        type_ids = tl.load(type_ids_ptr + b * stride_tb + s * stride_ts, mask=token_mask, other=0).to(tl.int64)
    pos_ids = s
    if HAS_POSITION_IDS:
        pos_ids = tl.load(pos_ids_ptr + b * stride_pb + s * stride_ps, mask=token_mask, other=0).to(tl.int64)
    word = tl.load(word_ptr + ids[:, None] * N + cols[None, :], mask=mask, other=0.0)
    token_type = tl.load(type_ptr + type_ids[:, None] * N + cols[None, :], mask=mask, other=0.0)
    position = tl.load(pos_ptr + pos_ids[:, None] * N + cols[None, :], mask=mask, other=0.0)
    dtype = y_ptr.dtype.element_ty
    z = (word.to(tl.float32) + token_type.to(tl.float32)).to(dtype).to(tl.float32)  # rounded as torch's add
    z = (z + position.to(tl.float32)).to(dtype).to(tl.float32)
    y, _, _ = normalize_rows(z, mask, w_ptr, b_ptr, cols, col_mask, N, eps)
    tl.store(y_ptr + tokens[:, None] * N + cols[None, :], y.to(dtype), mask=mask)


def _embedding_layer_norm_fwd(
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """input_ids (B, S), token_type_ids / position_ids (B, S) views (any strides, 0 for broadcast) or None;
    tables: word (V, N), position (P, N), token type (T, N) -> (B, S, N) in the tables' dtype."""
    word, position, token_type = (t.contiguous() for t in tables)
    batch, seq_len = input_ids.shape
    width = word.shape[1]
    y = torch.empty((batch, seq_len, width), dtype=word.dtype, device=word.device)  # (B, S, N)
    tokens = batch * seq_len
    if tokens == 0:
        return y
    cfg = row_launch_settings(width, whole_row=True)
    ids_strides = [(t.stride(0), t.stride(1)) if t is not None else (0, 0) for t in (token_type_ids, position_ids)]
    _embedding_layer_norm_fwd_kernel[(cdiv(tokens, cfg.block_rows),)](
        input_ids, input_ids if token_type_ids is None else token_type_ids,
        input_ids if position_ids is None else position_ids,
        word, token_type, position, ln_weight.contiguous(), ln_bias.contiguous(), y,
        input_ids.stride(0), input_ids.stride(1), *ids_strides[0], *ids_strides[1], tokens, seq_len, width, eps,
        HAS_TYPE_IDS=token_type_ids is not None, HAS_POSITION_IDS=position_ids is not None,
        BLOCK_M=cfg.block_rows, BLOCK_N=cfg.block_cols, num_warps=cfg.num_warps,
    )
    return y


class _EmbeddingLayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        input_ids: torch.Tensor,
        word_weight: torch.Tensor,
        position_weight: torch.Tensor,
        token_type_weight: torch.Tensor,
        ln_weight: torch.Tensor,
        ln_bias: torch.Tensor,
        eps: float,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        padding_idx: int | None,
    ) -> torch.Tensor:
        tables = (word_weight, position_weight, token_type_weight)
        ctx.save_for_backward(input_ids, *tables, ln_weight, ln_bias, token_type_ids, position_ids)
        ctx.eps, ctx.padding_idx = eps, padding_idx
        shape = input_ids.shape
        expanded = [None if t is None else t.expand(shape) for t in (token_type_ids, position_ids)]  # (B, S) views
        return _embedding_layer_norm_fwd(input_ids, *expanded, tables, ln_weight, ln_bias, eps)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        input_ids, *params, token_type_ids, position_ids = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]  # word, position, token type, ln weight, ln bias
            word, position, token_type, ln_weight, ln_bias = leaves
            out = embedding_layer_norm_ref(
                input_ids, word_weight=word, position_weight=position, token_type_weight=token_type,
                ln_weight=ln_weight, ln_bias=ln_bias, eps=ctx.eps, token_type_ids=token_type_ids,
                position_ids=position_ids, padding_idx=ctx.padding_idx,
            )
            grads = torch.autograd.grad(out, leaves, dy)
        return (None, *grads, None, None, None, None)


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """True when a tensor of ``shape`` expands to ``target`` (sizes equal or 1, aligned from the right)."""
    return len(shape) <= len(target) and all(a in (1, b) for a, b in zip(reversed(shape), reversed(target)))


def _check_embedding_inputs(
    input_ids: torch.Tensor,
    tables: dict[str, torch.Tensor],
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> None:
    """Raise on non-integer / non-(B, S) ids, ids that do not broadcast to (B, S), or mismatched tables."""
    ids = {"input_ids": input_ids, "token_type_ids": token_type_ids, "position_ids": position_ids}
    for name, t in ids.items():
        if t is not None and t.dtype not in ID_DTYPES:
            raise TypeError(f"bertfast_kernels.embedding_layer_norm: {name} must be an int64 or int32 tensor, got {t.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"bertfast_kernels.embedding_layer_norm: input_ids must be (B, S), got {tuple(input_ids.shape)}")
    for name in ("token_type_ids", "position_ids"):
        t = ids[name]
        if t is not None and not _broadcasts_to(t.shape, input_ids.shape):
            raise ValueError(
                f"bertfast_kernels.embedding_layer_norm: {name} {tuple(t.shape)} does not broadcast to input_ids "
                f"{tuple(input_ids.shape)}"
            )
    width = tables["word_weight"].shape[-1]
    for name, t in tables.items():
        if t.dim() != 2 or t.shape[1] != width:
            raise ValueError(f"bertfast_kernels.embedding_layer_norm: {name} must be (rows, {width}), got {tuple(t.shape)}")
        if t.dtype != tables["word_weight"].dtype or t.dtype not in DTYPES:
            raise TypeError(f"bertfast_kernels.embedding_layer_norm: the tables must share one dtype of {DTYPES}")
    check_vector("ln_weight", ln_weight, width)
    check_vector("ln_bias", ln_bias, width)


def embedding_layer_norm(
    input_ids: torch.Tensor,
    *,
    word_weight: torch.Tensor,
    position_weight: torch.Tensor,
    token_type_weight: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float = 1e-12,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    padding_idx: int | None = None,
) -> torch.Tensor:
    """Triton ``LayerNorm(word[input_ids] + token_type[token_type_ids] + position[position_ids])``; every
    argument after input_ids is keyword-only (the three tables share a shape, so a swap would go unnoticed).

    input_ids: (B, S) int64/int32; token_type_ids / position_ids: int64/int32, broadcastable to (B, S), or None
    for token type 0 and positions 0..S-1 in every row. Tables: word (V, N), position (P, N), token type
    (T, N), one dtype of fp32 / fp16 / bf16; ln_weight, ln_bias: (N,). Ids must be in range (unchecked,
    see the module docstring). padding_idx only affects the word table's gradient. Returns (B, S, N) in
    the tables' dtype; differentiable in the tables and the LayerNorm parameters.
    """
    check_launchable("embedding_layer_norm", input_ids, word_weight, position_weight, token_type_weight,
                     ln_weight, ln_bias, token_type_ids, position_ids)
    tables = {"word_weight": word_weight, "position_weight": position_weight, "token_type_weight": token_type_weight}
    _check_embedding_inputs(input_ids, tables, ln_weight, ln_bias, token_type_ids, position_ids)
    return _EmbeddingLayerNormFn.apply(input_ids, word_weight, position_weight, token_type_weight, ln_weight,
                                       ln_bias, eps, token_type_ids, position_ids, padding_idx)


def embedding_layer_norm_ref(
    input_ids: torch.Tensor,
    *,
    word_weight: torch.Tensor,
    position_weight: torch.Tensor,
    token_type_weight: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float = 1e-12,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    padding_idx: int | None = None,
) -> torch.Tensor:
    """Torch reference, the ops of bertfast's BertEmbeddings.forward: absent token types / positions
    broadcast row 0 / rows 0..S-1 instead of gathering. input_ids (B, S) -> (B, S, N)."""
    seq_len = input_ids.shape[1]
    token_type = token_type_weight[0] if token_type_ids is None else F.embedding(token_type_ids, token_type_weight)
    position = position_weight[:seq_len] if position_ids is None else F.embedding(position_ids, position_weight)
    embeddings = F.embedding(input_ids, word_weight, padding_idx) + token_type + position  # (B, S, N)
    return F.layer_norm(embeddings, (embeddings.shape[-1],), ln_weight, ln_bias, eps)
