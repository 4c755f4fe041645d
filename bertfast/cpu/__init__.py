"""The CPU backend: what this CPU has (``cpu.info``), the float32 GEMM measured fastest for it (``cpu.gemm``) and
int8 (``cpu.int8``). Loading goes through two entries: ``check_load`` (before any file is read) and ``prepare``
(on the loaded model). The modules point one way: info <- gemm, info <- int8 <- this package."""
from __future__ import annotations

import torch
import torch.nn as nn

from bertfast.cpu.gemm import gemm_path, pack_linears, plain_linear
from bertfast.cpu.info import INT8_ENGINES, CpuInfo, check_cpu_dtype, cpu_info, int8_engine
from bertfast.cpu.int8 import MODES, check_quantize, quantize

__all__ = ["INT8_ENGINES", "MODES", "CpuInfo", "check_cpu_dtype", "check_load", "check_quantize", "cpu_info",
           "gemm_path", "int8_engine", "pack_linears", "plain_linear", "prepare", "quantize"]


def check_load(dtype: torch.dtype, device: torch.device, quantize_mode: str | None) -> None:
    """The CPU's refusals and warnings for a load with ``dtype`` on ``device`` and ``quantize=quantize_mode``."""
    check_cpu_dtype(dtype, device)
    check_quantize(quantize_mode, dtype, device)


def prepare(model: nn.Module, quantize_mode: str | None = None, source: str | None = None) -> nn.Module:
    """A loaded model made ready for the CPU: float32 linear layers on the GEMM measured fastest here (weights
    packed once), then int8 when ``quantize_mode`` asks for it, calibrated with the tokenizer of the checkpoint
    folder ``source`` where it has one. Other devices and dtypes are left as they are."""
    if model.device.type == "cpu" and model.dtype == torch.float32:
        pack_linears(model)
    if quantize_mode is None:
        return model
    from bertfast.auto_tokenizer import folder_tokenizer

    return quantize(model, quantize_mode, tokenizer=folder_tokenizer(source))

