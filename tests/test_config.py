"""The dtype names a model is loaded or run in (``resolve_dtype``, beside the config)."""
from __future__ import annotations

import pytest
import torch

from bertfast.config import resolve_dtype


@pytest.mark.parametrize("name, dtype", [(None, torch.float32), (torch.float16, torch.float16),
                                         ("float32", torch.float32), ("fp32", torch.float32),
                                         ("float", torch.float32), ("float16", torch.float16),
                                         ("fp16", torch.float16), ("half", torch.float16),
                                         ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name) is dtype


def test_unknown_dtype_name():
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        resolve_dtype("float8")
