"""What this CPU has, read at run time (never assumed): its model name and the ISA features the CPU modes
depend on (bf16: avx512_bf16 / AMX; int8: VNNI), and the int8 engine the quantized model uses.

Features come from /proc/cpuinfo's flags where there is one (Linux), with torch's own
``torch.backends.cpu.get_cpu_capability()`` (the vector ISA its kernels were dispatched to) beside them.
"""
from __future__ import annotations

import functools
import os
import platform
import warnings
from dataclasses import dataclass

import torch

# The flags reported in the bench header and the README, in /proc/cpuinfo's spelling.
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
CPUINFO = "/proc/cpuinfo"
INT8_ENGINES = ("x86", "fbgemm", "onednn")  # torch's CPU int8 engines, in order of preference


@dataclass(frozen=True)
class CpuInfo:
    """This machine's CPU as the CPU modes see it."""

    name: str  # the model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) ..."), or platform.processor()
    flags: frozenset[str]  # the FEATURES this CPU has
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", "DEFAULT"...

    @property
    def native_bf16(self) -> bool:
        """bf16 matmuls in hardware: avx512_bf16 or AMX (otherwise torch emulates them, slowly)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def vnni(self) -> bool:
        """int8 dot products in one instruction (AVX512-VNNI, AVX-VNNI or AMX int8)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    def describe(self) -> str:
        """One line: name, the features it has and lacks, torch's ISA."""
        has = [f for f in FEATURES if f in self.flags]
        lacks = [f for f in FEATURES if f not in self.flags]
        return (f"{self.name}, {os.cpu_count()} cores; has {' '.join(has) or 'none of ' + ' '.join(FEATURES)}"
                f"{'; lacks ' + ' '.join(lacks) if has and lacks else ''}; torch ISA {self.torch_capability}")


def _read_cpuinfo(path: str = CPUINFO) -> tuple[str, set[str]]:
    """(model name, every flag) of the first processor in /proc/cpuinfo, or ("", set()) without one."""
    name, flags = "", set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    return name, flags


@functools.lru_cache(maxsize=None)
def cpu_info() -> CpuInfo:
    """This machine's CpuInfo (read once per process)."""
    name, flags = _read_cpuinfo()
    return CpuInfo(name=name or platform.processor() or platform.machine(), flags=frozenset(flags & set(FEATURES)),
                   torch_capability=torch.backends.cpu.get_cpu_capability())


def int8_engine() -> str:
    """The int8 engine of ``bertfast.quantize``: ``BERTFAST_INT8_ENGINE`` when set, else the first of
    INT8_ENGINES this torch build has."""
    supported = torch.backends.quantized.supported_engines
    forced = os.environ.get("BERTFAST_INT8_ENGINE", "").strip().lower()
    if forced:
        if forced not in INT8_ENGINES or forced not in supported:
            raise ValueError(f"BERTFAST_INT8_ENGINE={forced!r}: use one of {[e for e in INT8_ENGINES if e in supported]}")
        return forced
    for engine in INT8_ENGINES:
        if engine in supported:
            return engine
    raise RuntimeError(f"this torch build has no x86 int8 engine (it has {supported}): int8 needs an x86 CPU build")


def check_cpu_dtype(dtype: torch.dtype, device: torch.device) -> None:
    """The CPU's dtype rules, applied when a model is loaded: float16 runs but warns (x86 CPUs compute it in
    software: slower than float32 and less accurate), bfloat16 warns on a CPU without avx512_bf16 / AMX (torch then
    emulates it: it runs, with bf16's numbers, but slower than float32)."""
    if torch.device(device).type != "cpu":
        return
    if dtype == torch.float16:
        warnings.warn("float16 on the CPU is slow and less accurate (x86 CPUs compute it in software): use "
                      "dtype=torch.bfloat16 (--dtype bfloat16; fast where the CPU has avx512_bf16 or AMX), "
                      "quantize='int8' (--quantize int8) or float32; float16 is for the GPU", stacklevel=4)
        return
    info = cpu_info()
    if dtype == torch.bfloat16 and not info.native_bf16:
        warnings.warn(f"bfloat16 on this CPU ({info.name}) will be slow: it has neither avx512_bf16 nor AMX, so torch "
                      f"emulates bf16 matmuls (measured several times slower than float32). Use float32 or "
                      f"quantize='int8' here; bfloat16 pays on CPUs with avx512_bf16 or AMX.", stacklevel=4)
