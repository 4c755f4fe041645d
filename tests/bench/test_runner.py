"""bertfast/bench/runner.py: the run end to end through ``bertfast bench`` and ``python -m benchmarks``, wrong and
failing providers, and how unset options get their defaults."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertfast.bench import options
from bertfast.bench.providers import REGISTRY, BertfastTorch, Provider
from bertfast.bench.runner import settings_from_args
from bertfast.bench.workloads import model_flops
from bertfast.cli import main as bertfast_main
from bertfast.config import BertConfig
from tests.helpers import REPO_ROOT


def bench(tmp_path: Path, model: str, *extra: str) -> dict:
    """Run ``bertfast bench`` on CPU with few repeats; return the JSON it wrote."""
    out = tmp_path / "results"
    argv = ["bench", "--model", model, "--device", "cpu", "--batch", "2", "--seq", "8", "--warmup", "1",
            "--repeats", "3", "--max-time", "0.5", "--out", str(out), *extra]
    assert bertfast_main(argv) == 0
    [path] = out.glob("*.json")
    return json.loads(path.read_text())


def by_provider(report: dict, provider: str) -> list[dict]:
    return [r for r in report["results"] if r["provider"] == provider]


class WrongProvider(BertfastTorch):
    """bertfast with its output shifted by 1e-2: must be reported as wrong, never timed."""

    name = "wrong"
    description = "deliberately wrong"
    calls = 0

    def run(self, batch):
        type(self).calls += 1
        return super().run(batch) + 1e-2


class NanProvider(BertfastTorch):
    name = "nan"
    description = "NaN at real positions"

    def run(self, batch):
        return super().run(batch) * float("nan")


class BrokenProvider(BertfastTorch):
    name = "broken"
    description = "raises"

    def run(self, batch):
        raise RuntimeError("kaboom\n" + "a long traceback-like explanation " * 20)


def test_bench_end_to_end(tmp_path, tiny_checkpoint, capsys):
    report = bench(tmp_path, tiny_checkpoint, "--providers", "bertfast-torch,transformers-eager,bertfast-triton")
    out = capsys.readouterr().out
    assert report["schema"] == "bertfast-bench/1" and report["model"]["weights"].startswith("real weights")
    assert [w["name"] for w in report["workloads"]] == ["b2-s8", "b2-mixed"]
    assert all(16 <= n <= 64 for n in report["workloads"][1]["lengths"])  # TINY: max_position_embeddings 64
    config = BertConfig.from_json_file(os.path.join(tiny_checkpoint, "config.json"))
    assert [w["flops"] for w in report["workloads"]] == [model_flops(config, w["lengths"]) for w in report["workloads"]]
    results = report["results"]
    assert {(r["provider"], r["workload"]) for r in results} == {
        (p, w) for p in ("bertfast-torch", "transformers-eager") for w in ("b2-s8", "b2-mixed")}
    for r in results:
        t = r["latency_ms"]
        assert r["status"] == "ok" and r["max_abs_error"] <= r["allowed_error"], r
        assert t["n"] == 3 and t["min"] <= t["q20"] <= t["median"] <= t["q80"] <= t["p90"] <= t["p99"] <= t["max"]
        assert r["tokens_per_s"] == pytest.approx(r["real_tokens"] / t["median"] * 1e3)
        assert r["sequences_per_s"] == pytest.approx(2 / t["median"] * 1e3)
        assert r["peak_memory_mb"] > 0 and r["tflops"] > 0 and r["floor_ms"] > 0
        if r["provider"] == "transformers-eager":
            assert r["speedup_vs_eager"] == 1.0 and r["max_abs_error"] == 0.0
    eager = {r["workload"]: r["latency_ms"]["median"] for r in results if r["provider"] == "transformers-eager"}
    for r in results:
        assert r["speedup_vs_eager"] == pytest.approx(eager[r["workload"]] / r["latency_ms"]["median"])
    assert {"provider": "bertfast-triton", "dtype": "float32",
            "reason": "Triton kernels need a GPU (the interpreter is for tests)"} in report["skipped"]
    assert "skipped:" in out and "Triton kernels need a GPU" in out and "b2-mixed" in out
    [md] = (tmp_path / "results").glob("*.md")
    [png] = (tmp_path / "results").glob("*.png")
    assert "| provider | precision | median ms [q20, q80] |" in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("interleave", [False, True], ids=["one-by-one", "interleaved"])
def test_a_wrong_provider_is_reported_and_not_timed(tmp_path, tiny_checkpoint, monkeypatch, capsys, interleave):
    monkeypatch.setitem(REGISTRY, "wrong", WrongProvider)
    monkeypatch.setitem(REGISTRY, "broken", BrokenProvider)
    monkeypatch.setitem(REGISTRY, "nan", NanProvider)
    WrongProvider.calls = 0
    report = bench(tmp_path, tiny_checkpoint, "--providers", "wrong,broken,nan,bertfast-torch,transformers-eager",
                   *(["--interleave"] if interleave else []))
    wrong = by_provider(report, "wrong")
    assert len(wrong) == 2 and WrongProvider.calls == 2  # one parity-check call per workload, nothing timed
    for r in wrong:
        assert r["status"] == "wrong" and r["latency_ms"] is None and r["tokens_per_s"] is None
        assert r["max_abs_error"] > r["allowed_error"] and "differs from transformers fp32" in r["reason"]
    assert all(r["status"] == "failed" and "RuntimeError: kaboom" in r["reason"] for r in by_provider(report, "broken"))
    assert all(r["status"] == "wrong" and r["max_abs_error"] is None and "non-finite" in r["reason"]
               for r in by_provider(report, "nan"))  # and the JSON stayed standard (no NaN / Infinity)
    for r in by_provider(report, "bertfast-torch"):
        assert r["status"] == "ok" and r["latency_ms"]["n"] == 3 and r["speedup_vs_eager"] > 0
        assert (r["peak_memory_mb"] is None) == interleave
    assert report["settings"]["interleave"] == interleave and ("--interleave" in report["peak_memory"]) == interleave
    out = capsys.readouterr().out
    assert "WRONG (not timed): output differs from transformers fp32" in out
    assert "FAILED (not timed): RuntimeError: kaboom ... (whole text in the JSON)" in out
    assert "explanation" not in out and "explanation" in by_provider(report, "broken")[0]["reason"]


class EncoderOnly(BertfastTorch):
    name = "encoder-only"
    description = "a provider that measures the encoder only (the default tasks)"
    tasks = Provider.tasks


@pytest.mark.parametrize("task", [t for t in options.GRID_TASKS if t != options.DEFAULT_TASK])
def test_bench_measures_each_task_head(tmp_path, tiny_checkpoint, monkeypatch, task):
    """--task: a random head on the base checkpoint, each provider's head output checked against transformers'
    (real tokens of per-token outputs, padding included in b2-mixed), a wrong one caught, one that measures the
    encoder only skipped with its reason."""
    monkeypatch.setitem(REGISTRY, "wrong", WrongProvider)
    monkeypatch.setitem(REGISTRY, "encoder-only", EncoderOnly)
    report = bench(tmp_path, tiny_checkpoint, "--task", task, "--providers",
                   "bertfast-torch,transformers-eager,wrong,encoder-only")
    assert report["settings"]["task"] == task and f"task {task}: " in report["model"]["weights"]
    for r in by_provider(report, "bertfast-torch") + by_provider(report, "transformers-eager"):
        assert r["status"] == "ok" and r["max_abs_error"] <= r["allowed_error"] and r["latency_ms"]["n"] == 3, r
    assert len(by_provider(report, "bertfast-torch")) == 2  # b2-s8 and b2-mixed
    assert all(r["status"] == "wrong" for r in by_provider(report, "wrong"))
    assert {"provider": "encoder-only", "dtype": "float32",
            "reason": f"measures feature-extraction only, not --task {task}"} in report["skipped"]
    assert not by_provider(report, "encoder-only")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_defaults_and_explicit_options():
    quick = settings_from_args(parse("--quick", "--device", "cpu"))
    assert (quick.batches, quick.seqs, quick.dtypes, quick.interleave) == ([4], [128], [torch.float32], False)
    assert "transformers-compile" not in quick.providers and "transformers-compile" in quick.left_out
    chosen = settings_from_args(parse("--quick", "--device", "cpu", "--batch", "4", "--providers",
                                      "transformers-compile", "--dtype", "bf16", "fp32"))
    assert chosen.batches == [4] and chosen.providers == ["transformers-compile"] and not chosen.left_out
    assert chosen.dtypes == [torch.bfloat16, torch.float32]
    full = settings_from_args(parse("--device", "cpu"))
    assert (full.batches, full.seqs, full.providers, full.interleave) == ([1, 8, 32], [32, 128, 512], list(REGISTRY),
                                                                          False)
    assert full.task == "feature-extraction"
    assert settings_from_args(parse("--device", "cpu", "--task", "question-answering")).task == "question-answering"
    assert settings_from_args(parse("--quick", "--interleave")).interleave


def test_unset_options_take_their_defaults_from_options_and_given_ones_win():
    for argv, defaults in ((["--device", "cpu"], options.FULL), (["--quick", "--device", "cpu"], options.QUICK)):
        settings = settings_from_args(parse(*argv))
        t = settings.timing
        assert (tuple(settings.batches), tuple(settings.seqs), t.warmup, t.repeats, t.max_time_s,
                settings.interleave) == (defaults.batches, defaults.seqs, defaults.warmup, defaults.repeats,
                                         defaults.max_time_s, defaults.interleave)
        assert settings.dtypes == [torch.float32] and settings.seed == 0 and settings.mixed
    full = settings_from_args(parse("--device", "cpu"))
    assert (full.timing.warmup, full.timing.repeats, full.timing.max_time_s) == (3, 30, 10.0)
    quick = settings_from_args(parse("--quick", "--device", "cpu"))
    assert (quick.timing.warmup, quick.timing.repeats, quick.timing.max_time_s) == (0, 5, 2.0)
    assert quick.timing.min_repeats == 5 and full.timing.min_repeats == 3
    given = settings_from_args(parse("--device", "cpu", "--warmup", "0", "--repeats", "7", "--max-time", "0.5",
                                     "--no-interleave", "--seed", "3"))
    assert (given.timing.warmup, given.timing.repeats, given.timing.max_time_s) == (0, 7, 0.5)
    assert not given.interleave and given.seed == 3


def test_python_m_benchmarks_lists_providers():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--list-providers", "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in REGISTRY) and "Triton kernels need a GPU" in result.stdout
