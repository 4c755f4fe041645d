"""GeGLU, ``gelu(x[..., :I]) * x[..., I:]`` (ModernBERT's MLP gate): torch reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bertfast_kernels.gelu import APPROXIMATIONS


def geglu_ref(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """Torch reference: ``a, b = x.chunk(2, -1)``; ``gelu(a, approximate) * b`` as transformers' ModernBertMLP.

    x: (..., 2 I); approximate: "none" (exact erf) or "tanh". Returns (..., I) in x's dtype.
    """
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
    a, b = x.chunk(2, dim=-1)
    return F.gelu(a, approximate=approximate) * b
