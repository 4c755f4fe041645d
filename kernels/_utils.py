"""Shared helpers for the kernels: Triton availability and interpreter detection."""
from __future__ import annotations

import importlib.util
import os


def triton_installed() -> bool:
    """True when the `triton` package can be imported (it is optional)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
