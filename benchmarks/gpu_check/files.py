"""The output folder's rules: a fixed set of at most 8 files, none deeper than the folder itself, each under
16 MiB (a log past LOG_LIMIT keeps its head and tail), each written to a temporary name and renamed."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY, RESULTS, PLOT, KERNELS_JSON = "summary.md", "results.json", "bench.png", "kernels.json"
LOGS = {"pytest-tests": "tests.log", "pytest-kernels": "kernels.log"}  # by step kind; the other steps: STEPS_LOG
STEPS_LOG = "steps.log"
OUTPUTS = (SUMMARY, RESULTS, PLOT, KERNELS_JSON, *LOGS.values(), STEPS_LOG)
MAX_FILES = 8
FILE_LIMIT = 16 * 2**20  # bytes, per file
LOG_LIMIT = 4 * 2**20  # a longer log keeps its first and last 2 MiB


def prepare_out_dir(out: Path) -> None:
    """Create ``out``, which may be new, empty, or hold an earlier check's files (removed, with the temporaries
    of a check that was killed); anything else is refused, so the folder holds this check's files only."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it is created if missing)")
    temporaries = {_temporary(Path(name)).name for name in OUTPUTS}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in {*OUTPUTS, *temporaries}) if out.is_dir() else []
    if foreign:
        raise ValueError(f"--out {out} already holds {', '.join(foreign[:5])}: give a new or empty folder "
                         f"(an earlier GPU check's own files are fine, they are replaced)")
    out.mkdir(parents=True, exist_ok=True)
    for name in (*OUTPUTS, *temporaries):
        (out / name).unlink(missing_ok=True)


def _temporary(path: Path) -> Path:
    """A name beside ``path`` that keeps its suffix (matplotlib picks the format from it)."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_bytes(path: Path, data: bytes) -> None:
    if len(data) >= FILE_LIMIT:
        raise ValueError(f"{path.name} would be {len(data) / 2**20:.1f} MiB, over the {FILE_LIMIT // 2**20} MiB limit")
    tmp = _temporary(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_log(path: Path, text: str) -> None:
    """A log, cut in the middle when it is longer than LOG_LIMIT (the cut says how much went)."""
    data = text.encode("utf-8", errors="replace")
    if len(data) > LOG_LIMIT:
        half = LOG_LIMIT // 2
        marker = f"\n[... {len(data) - 2 * half:,} bytes cut: the log passed {LOG_LIMIT // 2**20} MiB ...]\n"
        data = data[:half] + marker.encode() + data[-half:]
    write_bytes(path, data)


def plot_to(path: Path, plot: Any) -> None:
    """``plot(filename)`` writes an image; it is written to a temporary name and renamed over ``path``."""
    tmp = _temporary(path)
    plot(str(tmp))
    if tmp.stat().st_size >= FILE_LIMIT:
        tmp.unlink()
        raise ValueError(f"{path.name} would be over the {FILE_LIMIT // 2**20} MiB limit")
    os.replace(tmp, path)
