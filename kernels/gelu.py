"""Bias add + GELU (exact erf, or the tanh approximation)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bias_gelu_ref(x: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """Torch reference: ``gelu(x + bias)``; x (..., N), bias (N,); approximate is "none" (erf) or "tanh"."""
    if bias is not None:
        x = x + bias
    return F.gelu(x, approximate=approximate)
