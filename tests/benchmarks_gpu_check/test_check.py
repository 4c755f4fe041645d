"""benchmarks/gpu_check/check.py: ``python -m benchmarks.gpu_check --dry-run`` end to end in a subprocess, as
on the device: the output folder's limits, every step named with its status and reason, every target found
its figure, and a tiny --budget-s cuts steps and says so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu_check import files
from benchmarks.gpu_check.check import main
from benchmarks.gpu_check.derive import TARGETS
from benchmarks.gpu_check.plan import RESERVE_S, STEPS
from tests.helpers import REPO_ROOT

DRY_BUDGET_S = 300  # the dry run takes about a minute on 2 idle cores; the budget bounds it on a loaded machine


def gpu_check(out: Path, *options: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out), *options]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    start = time.monotonic()
    done = gpu_check(out, "--budget-s", str(DRY_BUDGET_S), timeout=DRY_BUDGET_S + 60)
    return out, done, time.monotonic() - start


def check_folder(out: Path) -> dict:
    """The folder's limits; returns results.json."""
    entries = list(out.rglob("*"))
    assert all(p.is_file() and p.parent == out for p in entries), entries  # nothing in subfolders
    assert 0 < len(entries) <= files.MAX_FILES
    assert {p.name for p in entries} <= set(files.OUTPUTS)
    assert all(p.stat().st_size < files.FILE_LIMIT for p in entries)
    results = json.loads((out / files.RESULTS).read_text())
    assert [s["name"] for s in results["steps"]] == [s.name for s in STEPS]
    for step in results["steps"]:
        assert step["status"] in ("ran", "skipped", "cut"), step  # "failed": something broke
        assert (step["reason"] is None) == (step["status"] == "ran"), step
    assert sorted(results["files"]) == sorted(p.name for p in entries)
    return results


def test_dry_run_writes_every_file_within_the_limits(dry_run):
    out, done, seconds = dry_run
    assert done.returncode == 0, done.stderr
    results = check_folder(out)
    assert sorted(results["files"]) == sorted(files.OUTPUTS)
    assert results["dry_run"] and results["finished"] and results["elapsed_s"] <= DRY_BUDGET_S
    assert seconds < DRY_BUDGET_S + 30
    status = {s["name"]: s for s in results["steps"]}
    for step in STEPS:
        expected = "skipped" if step.dry_skip else "ran"
        assert status[step.name]["status"] == expected, status[step.name]
        if step.dry_skip:
            assert status[step.name]["reason"] == f"dry run: {step.dry_skip}"
    assert (out / files.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = json.loads((out / files.KERNELS_JSON).read_text())
    assert {b["name"].split("[")[0] for b in raw["benchmarks"]} >= {
        "test_layer_norm", "test_varlen_attention", "test_dense_gelu", "test_rotary", "test_geglu",
        "test_window_attention"}
    kernels = status["kernels"]["result"]
    assert kernels["rotary"] and kernels["geglu"] and kernels["window_vs_ref"] and kernels["window_vs_full"]
    assert "-m cuda" in (out / "tests.log").read_text() and status["tests"]["result"]["skipped"] > 0
    modernbert = status["bench-modernbert"]["result"]  # its own model, every provider checked against transformers
    assert modernbert["model"]["config"]["model_type"] == "modernbert"
    assert {(r["provider"], r["status"]) for r in modernbert["results"]} == {
        (p, "ok") for p in ("bertfast-torch", "transformers-sdpa", "transformers-eager")}
    assert "bench-modernbert: ModernBERT" in (out / files.SUMMARY).read_text()


def test_dry_run_finds_a_figure_for_every_target(dry_run):
    out = dry_run[0]
    results = json.loads((out / files.RESULTS).read_text())
    assert len(results["targets"]) == len(TARGETS)
    for target in results["targets"]:
        assert target["verdict"] in ("met", "missed") and target["value"] is not None, target
    kernels = next(s["result"] for s in results["steps"] if s["name"] == "kernels")
    assert kernels["auto_gemm"]["choice"] in ("cublas", "triton", "by-rows", "mixed")
    assert kernels["copy_gbs"] > 0 and kernels["attention_vs_sdpa"] and kernels["varlen_vs_padded_sdpa"]


def test_dry_run_prints_one_screen(dry_run):
    out, done, _ = dry_run
    screen = done.stdout.strip().splitlines()
    assert len(screen) <= 40 and "DRY RUN" in screen[2]
    for target in json.loads((out / files.RESULTS).read_text())["targets"]:
        assert any(line.strip().startswith(target["target"]) and target["verdict"] in line for line in screen)
    assert screen[-1].startswith(f"wrote {out}/:")
    summary = (out / files.SUMMARY).read_text()
    assert done.stdout.strip() in summary and "## bertfast bench" in summary


def test_a_tiny_budget_cuts_the_least_important_steps_and_says_so(tmp_path):
    budget = RESERVE_S + 1.5  # room for the machine step only
    start = time.monotonic()
    done = gpu_check(tmp_path / "out", "--budget-s", str(budget), timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < budget + 20  # the final files and the interpreter's start and exit
    results = check_folder(tmp_path / "out")
    status = {s["name"]: s for s in results["steps"]}
    assert status["machine"]["status"] == "ran"
    cut = [s.name for s in STEPS if status[s.name]["status"] == "cut"]
    assert cut == [s.name for s in STEPS if s.name != "machine" and not s.dry_skip]
    for name in cut:
        assert status[name]["reason"].startswith(f"cut to stay inside --budget-s {budget:g}:")
    assert f"cut ceilings: cut to stay inside --budget-s {budget:g}" in done.stdout


def test_refuses_a_folder_holding_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--dry-run", "--out", str(tmp_path)]) == 2
    assert "already holds notes.txt" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
