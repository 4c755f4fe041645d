"""Scaled dot-product attention over (B, H, S, D) with a key padding mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _additive_mask(key_padding_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) bool, True = real token -> (B, 1, 1, S) additive bias: 0 for real keys, dtype's min for padding.

    The finite minimum (not -inf) is what transformers uses: a row whose keys are all padding then
    averages every value uniformly instead of producing NaN.
    """
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    bias.masked_fill_(~key_padding_mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]  # (B, 1, 1, S)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Torch reference attention.

    q, k, v: (B, H, S, D); key_padding_mask: (B, S) bool, True = real token. Returns the output
    (B, H, S, D), and with ``need_weights=True`` also the probabilities (B, H, S, S) computed eagerly
    (scores, additive mask, softmax, dropout) exactly as transformers' eager attention does.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = None if key_padding_mask is None else _additive_mask(key_padding_mask, q.dtype)
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, S, S)
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v), probs
