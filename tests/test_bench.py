"""The benchmark suite (benchmarks/): workloads, statistics, FLOP count, parity rule, providers, runner and CLI."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bertfast
from bertfast.bench import options, parity
from bertfast.bench.providers import (REGISTRY, BertfastCudaGraphs, BertfastTorch, BertfastTriton, OnnxRuntimeOptimized,
                                  OnnxRuntimePlain)
from bertfast.bench.report import slugify
from bertfast.bench.cases import Case, Timing, measure_interleaved
from bertfast.bench.runner import settings_from_args
from bertfast.bench.timing import MIN_REPEATS, PeakMemory, Summary, time_calls
from bertfast.bench.workloads import MIXED_RANGE, build_workloads, mixed_lengths, model_flops
from bertfast.cli import main as bertfast_main
from bertfast.config import BertConfig

CPU = torch.device("cpu")


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


# --- workloads ---------------------------------------------------------------------------------------------------

def test_mixed_lengths_are_bounded_seeded_and_spread():
    lengths = mixed_lengths(10_000, seed=3)
    assert min(lengths) >= MIXED_RANGE[0] and max(lengths) <= MIXED_RANGE[1]
    assert lengths == mixed_lengths(10_000, seed=3) and lengths != mixed_lengths(10_000, seed=4)
    assert 56 <= np.median(lengths) <= 72  # median 64 by construction
    assert min(lengths) == 16 and max(lengths) == 512  # the clipped tails are reached: a real spread
    assert max(mixed_lengths(50, seed=0, low=16, high=40)) <= 40
    with pytest.raises(ValueError, match="low <= high"):
        mixed_lengths(4, seed=0, low=30, high=20)


def test_workload_grid_and_inputs():
    workloads = build_workloads([1, 3], [8, 32], mixed=True, max_len=40, seed=0)
    assert [w.name for w in workloads] == ["b1-s8", "b1-s32", "b3-s8", "b3-s32", "b3-mixed"]
    mixed = workloads[-1]
    assert mixed.mixed and mixed.batch == 3 and all(16 <= n <= 40 for n in mixed.lengths)
    assert mixed.lengths == build_workloads([1, 3], [8, 32], mixed=True, max_len=40, seed=0)[-1].lengths

    config = BertConfig(vocab_size=50, pad_token_id=0)
    batch = mixed.inputs(config)
    assert batch["input_ids"].shape == (3, mixed.seq_len) == (3, max(mixed.lengths))
    assert batch["attention_mask"].sum(1).tolist() == list(mixed.lengths)
    real = batch["attention_mask"] == 1
    assert (batch["input_ids"][real] != 0).all() and (batch["input_ids"][~real] == 0).all()
    assert batch["input_ids"].max() < 50 and (batch["token_type_ids"][~real] == 0).all()
    assert batch["token_type_ids"][0, : mixed.lengths[0] // 2].eq(0).all()
    assert batch["token_type_ids"][0, mixed.lengths[0] // 2: mixed.lengths[0]].eq(1).all()
    assert torch.equal(batch["input_ids"], mixed.inputs(config)["input_ids"])  # reproducible
    assert mixed.real_tokens == sum(mixed.lengths)


def test_workloads_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"longer than the model's max_position_embeddings \(512\)"):
        build_workloads([1], [600], mixed=False, max_len=512)
    with pytest.raises(ValueError, match="must be positive"):
        build_workloads([0], [8], mixed=False, max_len=512)


# --- statistics, timing, FLOPs -----------------------------------------------------------------------------------

def test_summary_statistics():
    s = Summary.of([float(x) for x in range(100, 0, -1)])  # 1..100 ms in any order
    # linear interpolation between order statistics: quantile q sits at position 99 q of the sorted values
    assert (s.median, s.q20, s.q80, s.p90, s.p99) == pytest.approx((50.5, 20.8, 80.2, 90.1, 99.01))
    assert (s.min, s.max, s.mean, s.n) == (1.0, 100.0, 50.5, 100)
    assert Summary.of([2.0]).p99 == 2.0
    with pytest.raises(ValueError, match="no timings"):
        Summary.of([])


def test_time_calls_warms_up_then_times_at_least_min_repeats():
    calls = []
    times = time_calls(lambda: calls.append(1), CPU, warmup=2, repeats=7, max_time_s=60)
    assert len(times) == 7 and len(calls) == 9 and all(t >= 0 for t in times)
    calls.clear()
    times = time_calls(lambda: calls.append(1), CPU, warmup=0, repeats=50, max_time_s=1e-9)
    assert len(times) == MIN_REPEATS == len(calls)


def test_flops_formula_matches_a_hand_count_for_bert_base():
    config = BertConfig.from_preset("bert-base-uncased")
    tokens, width, ffn, heads, head_dim = 128, 768, 3072, 12, 64
    per_layer = [
        3 * 2 * tokens * width * width,  # query, key, value projections
        2 * heads * tokens * tokens * head_dim,  # scores Q K^T, per head
        2 * heads * tokens * tokens * head_dim,  # context P V, per head
        2 * tokens * width * width,  # attention output projection
        2 * tokens * width * ffn,  # feed-forward up
        2 * tokens * ffn * width,  # feed-forward down
    ]
    hand_count = 12 * sum(per_layer) + 2 * width * width  # + pooler on [CLS]
    assert hand_count == 22_348_431_360
    assert model_flops(config, [128]) == hand_count
    assert model_flops(config, [128, 128]) == 2 * hand_count
    assert model_flops(config, [100, 28]) < hand_count  # attention is quadratic in each sequence's own length


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS reset needs Linux /proc")
def test_peak_memory_on_cpu_sees_an_allocation_and_is_reset():
    with PeakMemory(CPU) as big:
        x = torch.ones(64, 2**20)  # 256 MB, touched
        del x
    with PeakMemory(CPU) as small:
        pass
    assert big.mb - small.mb > 200


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timing_and_memory():
    from bertfast.bench.timing import matmul_peak_tflops

    device = torch.device("cuda")
    a = torch.randn(2048, 2048, device=device)
    times = time_calls(lambda: a @ a, device, warmup=1, repeats=5, max_time_s=5)
    assert len(times) == 5 and all(t > 0 for t in times)
    with PeakMemory(device) as peak:
        y = torch.empty(2**28, dtype=torch.uint8, device=device)  # 256 MB
        del y
    assert peak.mb >= 256
    assert matmul_peak_tflops(device, torch.float16) > 1


# --- parity rule -------------------------------------------------------------------------------------------------

def test_parity_rule():
    ref = parity.Reference(torch.tensor([[1.0, -8.0], [0.5, 2.0]]), None)
    mask = torch.tensor([[1, 0, 1]])
    out = torch.zeros(1, 3, 2)
    out[0, 0], out[0, 2] = ref.real[0], ref.real[1]
    out[0, 1] = 123.0  # a padding position: never compared
    assert parity.check(out, mask, ref, torch.float32).ok
    out[0, 2, 1] += 7e-4  # allowed: 1e-4 x max(1, 8)
    assert parity.check(out, mask, ref, torch.float32).ok
    out[0, 2, 1] += 2e-4
    verdict = parity.check(out, mask, ref, torch.float32)
    assert not verdict.ok and verdict.allowed == pytest.approx(8e-4) and "> allowed" in str(verdict)
    out[0, 2, 1] = float("nan")
    verdict = parity.check(out, mask, ref, torch.float32)
    assert not verdict.ok and verdict.max_abs_error == float("inf") and "non-finite" in str(verdict)

    half_ref = parity.Reference(ref.real, half_error=0.02)
    assert parity.allowed_error(half_ref, torch.float16) == pytest.approx(2 * 0.02 + 1e-3)
    assert parity.allowed_error(half_ref, torch.bfloat16) == pytest.approx(2 * 0.02 + 1e-2)
    with pytest.raises(ValueError, match="no tolerance"):
        parity.allowed_error(ref, torch.float16)


# --- providers ---------------------------------------------------------------------------------------------------

def test_providers_say_why_they_cannot_run():
    assert BertfastTorch().available(CPU, torch.float32) is None
    assert BertfastTriton().available(CPU, torch.float32) == "Triton kernels need a GPU (the interpreter is for tests)"
    assert BertfastCudaGraphs().available(CPU, torch.float16) == "CUDA graphs need a GPU"

    ort = OnnxRuntimeOptimized()
    assert ort.available(CPU, torch.float32) is None
    assert "bfloat16" in ort.available(CPU, torch.bfloat16)
    assert "for the GPU" in ort.available(CPU, torch.float16)
    if not torch.cuda.is_available():
        assert "CUDA" in ort.available(torch.device("cuda"), torch.float16)


def test_onnxruntime_provider_runs_the_export_without_spinning_threads(tiny_checkpoint):
    """The real export and session: the output matches bertfast's, and on CPU the session uses torch's thread
    count and does not spin after a call (spinning threads slowed the next provider of an interleaved round)."""
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    batch = build_workloads([2], [5], mixed=False, max_len=64)[0].inputs(model.config)
    expected = model(**batch).last_hidden_state
    provider = OnnxRuntimePlain()
    provider.prepare(tiny_checkpoint, torch.float32, CPU)
    try:
        out = provider.run(batch)
        options = provider.session.session.get_session_options()
    finally:
        provider.close()
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == torch.get_num_threads()


def test_cudagraph_provider_calls_optimize(monkeypatch, tiny_checkpoint):
    """bertfast.optimize needs CUDA: a stand-in checks the provider's side (cuda_graphs=True, output as is)."""
    model = bertfast.BertModel.from_pretrained(tiny_checkpoint)
    calls = []

    def optimize(m, cuda_graphs):
        calls.append(cuda_graphs)
        return m

    monkeypatch.setattr(bertfast, "optimize", optimize)
    batch = build_workloads([2], [5], mixed=False, max_len=64)[0].inputs(model.config)
    provider = BertfastCudaGraphs()
    provider.prepare(tiny_checkpoint, torch.float32, CPU)
    out = provider.run(batch)
    provider.close()
    assert calls == [True] and torch.equal(out, model(**batch).last_hidden_state)


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


# --- runner and CLI ----------------------------------------------------------------------------------------------

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
    assert "| provider | median ms [q20, q80] |" in md.read_text()
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


def test_interleaved_timing_takes_turns_and_rotates():
    order = []

    class Recorder(BertfastTorch):
        def __init__(self, name):
            self.name = name

        def run(self, batch):
            order.append(self.name)
            return self.output

    workload = build_workloads([1], [4], mixed=False, max_len=8)[0]
    batch = workload.inputs(BertConfig(vocab_size=10))
    out = torch.ones(1, 4, 2)
    case = Case(workload, batch, parity.Reference(out[0], None), torch.float32, flops=100, peak_tflops=1.0)
    providers = [Recorder("a"), Recorder("b")]
    for p in providers:
        p.output = out
    results = measure_interleaved(providers, case, Timing(CPU, warmup=1, repeats=3, max_time_s=60))
    # parity checks, then one warm-up round and 3 timed rounds, the order rotating every round
    assert order == ["a", "b"] + ["b", "a"] + ["a", "b"] + ["b", "a"] + ["a", "b"]
    assert [r.latency_ms.n for r in results] == [3, 3] and all(r.status == "ok" for r in results)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_defaults_and_explicit_options():
    quick = settings_from_args(parse("--quick", "--device", "cpu"))
    assert (quick.batches, quick.seqs, quick.dtypes, quick.interleave) == ([1, 8], [128], [torch.float32], True)
    assert "transformers-compile" not in quick.providers and "transformers-compile" in quick.left_out
    chosen = settings_from_args(parse("--quick", "--device", "cpu", "--batch", "4", "--providers",
                                      "transformers-compile", "--dtype", "bf16", "fp32"))
    assert chosen.batches == [4] and chosen.providers == ["transformers-compile"] and not chosen.left_out
    assert chosen.dtypes == [torch.bfloat16, torch.float32]
    full = settings_from_args(parse("--device", "cpu"))
    assert (full.batches, full.seqs, full.providers, full.interleave) == ([1, 8, 32], [32, 128, 512], list(REGISTRY),
                                                                          False)
    assert not settings_from_args(parse("--quick", "--no-interleave")).interleave


def test_bench_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bertfast_main(["bench", "--help"])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--quick" in help_text and "--providers" in help_text
    with pytest.raises(SystemExit) as exit_info:
        bertfast_main(["bench", "--batch", "-1"])
    assert exit_info.value.code == 2 and "--batch: must be a positive integer, got -1" in capsys.readouterr().err
    assert bertfast_main(["bench", "--providers", "bertfast-torch,nope"]) == 1
    assert "unknown provider(s) ['nope']; known providers: bertfast-torch" in capsys.readouterr().err
    assert bertfast_main(["bench", "--device", "cpu", "--seq", "600"]) == 1
    assert "--seq [600] is longer than the model's max_position_embeddings (512)" in capsys.readouterr().err
    assert bertfast_main(["bench", "--device", "cpu", "--model", "/no/such/dir"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert bertfast_main(["bench", "--dtype", "float64"]) == 1
    assert "unsupported dtype 'float64'" in capsys.readouterr().err


def test_python_m_benchmarks_lists_providers():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--list-providers", "--device", "cpu"],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in REGISTRY) and "Triton kernels need a GPU" in result.stdout


def test_machine_slugs():
    assert slugify("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") == "intel-xeon-gold-6248"
    assert slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slugify("AMD EPYC 7763 64-Core Processor") == "amd-epyc-7763-64-core-processor"
