"""LayerNorm(x + residual) over the last dimension."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_norm_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-12,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch reference: ``layer_norm(x + residual)`` over the last dim; x (..., N), weight/bias (N,)."""
    if residual is not None:
        x = x + residual
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)
