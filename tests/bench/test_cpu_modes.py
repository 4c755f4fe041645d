"""The CPU-mode peers of bertfast bench (bertfast bf16/int8, transformers bf16/int8, onnxruntime int8, OpenVINO):
each checked by its own precision's accuracy rule; the report's per-case lines, quantiles, "fastest" lines."""
from __future__ import annotations

import copy

import pytest
import torch

import bertfast.cpu as cpu
from bertfast.bench import parity, report
from bertfast.bench.providers import (BertfastBf16, BertfastInt8, OnnxRuntimeInt8, OpenVino, TransformersBf16,
                                      TransformersInt8)
from bertfast.bench.workloads import build_workloads
from bertfast.config import BertConfig

CPU = torch.device("cpu")
NO_BF16 = cpu.CpuInfo("Test CPU", frozenset({"avx2"}), "AVX2")
BF16 = cpu.CpuInfo("Test CPU", frozenset({"avx512_bf16"}), "AVX512")


def _batch(checkpoint: str) -> dict[str, torch.Tensor]:
    config = BertConfig.from_json_file(f"{checkpoint}/config.json")
    return build_workloads([3], [9], mixed=True, max_len=64)[-1].inputs(config)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    batch = _batch(tiny_checkpoint)
    [real] = parity.fp32_outputs(tiny_checkpoint, [batch], CPU)
    [bf16] = parity.references(tiny_checkpoint, [batch], [real], torch.bfloat16, CPU)
    return batch, parity.Reference(real, None, bf16_error=bf16.half_error)


@pytest.mark.parametrize("provider_class", [BertfastInt8, TransformersInt8, OnnxRuntimeInt8, OpenVino])
def test_cpu_peers_pass_their_own_rule(provider_class, tiny_checkpoint, reference):
    batch, ref = reference
    provider = provider_class()
    assert provider.available(CPU, torch.float32) is None
    provider.prepare(tiny_checkpoint, torch.float32, CPU)
    try:
        with torch.inference_mode():
            verdict = parity.check(provider.run(batch), batch["attention_mask"], ref, torch.float32,
                                   provider.precision)
    finally:
        provider.close()
    assert verdict.ok, verdict
    assert verdict.rule == ("int8 (cosine)" if provider.precision == "int8" else "float32")
    if provider.precision is None:  # OpenVINO in f32: float32 parity, not a cosine
        assert verdict.max_abs_error <= 1e-4
    else:
        assert verdict.max_abs_error > 0 and verdict.min_cosine >= parity.INT8_MIN_COSINE


@pytest.mark.parametrize("provider_class", [BertfastBf16, TransformersBf16])
def test_bf16_peers_run_only_on_bf16_cpus_and_pass_the_bf16_rule(monkeypatch, provider_class, tiny_checkpoint,
                                                                   reference):
    import bertfast.bench.providers as providers

    monkeypatch.setattr(providers, "cpu_info", lambda: NO_BF16)
    provider = provider_class()
    assert "neither avx512_bf16 nor AMX" in provider.available(CPU, torch.float32)
    monkeypatch.setattr(providers, "cpu_info", lambda: BF16)
    assert provider.available(CPU, torch.float32) is None
    assert "float32 run" in provider.available(CPU, torch.bfloat16)
    monkeypatch.setattr(cpu, "cpu_info", lambda: BF16)  # no slowness warning on load
    batch, ref = reference
    provider.prepare(tiny_checkpoint, torch.float32, CPU)
    with torch.inference_mode():
        verdict = parity.check(provider.run(batch), batch["attention_mask"], ref, torch.float32, provider.precision)
    provider.close()
    assert verdict.ok and verdict.rule == "bfloat16" and verdict.allowed == pytest.approx(
        2 * ref.bf16_error + parity.HALF_ATOL[torch.bfloat16])


def test_int8_rule_refuses_a_wrong_output(reference):
    batch, ref = reference
    real = batch["attention_mask"] == 1
    good = torch.zeros(*batch["input_ids"].shape, ref.real.shape[-1])
    good[real] = ref.real
    assert parity.check(good, batch["attention_mask"], ref, torch.float32, "int8").ok
    bad = good.clone()
    bad[0, 0] = -bad[0, 0]  # one token pointing the other way
    verdict = parity.check(bad, batch["attention_mask"], ref, torch.float32, "int8")
    assert not verdict.ok and verdict.min_cosine < 0 and "min cosine" in str(verdict)
    with pytest.raises(ValueError, match="no rule for precision 'int4'"):
        parity.check(good, batch["attention_mask"], ref, torch.float32, "int4")


def _row(provider: str, median: float, n: int = 10, **extra) -> dict:
    t = {"median": median, "q20": median * 0.9, "q80": median * 1.1, "p90": median * 1.2, "p99": median * 1.3,
         "mean": median, "min": median * 0.8, "max": median * 1.5, "n": n}
    return {"provider": provider, "dtype": "float32", "workload": "b8-s128", "status": "ok", "reason": None,
            "latency_ms": t, "tokens_per_s": 1024 / median * 1e3, "sequences_per_s": 8 / median * 1e3,
            "speedup_vs_eager": None, "peak_memory_mb": None, "tflops": 1.0, "max_abs_error": 0.01,
            "min_cosine": 0.999, "precision": "float32", "rule": "float32", **extra}


def test_fastest_line_and_ratio_to_the_best_peer():
    rows = [_row("transformers-eager", 100.0), _row("onnxruntime-int8", 40.0, precision="int8"),
            _row("bertfast-torch", 80.0), _row("bertfast-int8", 32.0, precision="int8")]
    [line] = report.fastest({"results": rows})
    assert line.startswith("fastest, float32 b8-s128: bertfast-int8 (int8) 32.0 ms")
    assert "bertfast-int8 vs onnxruntime-int8 = 1.25x" in line


def test_quantiles_need_enough_calls_and_cases_print_on_one_line():
    few, many = _row("bertfast-int8", 30.0, n=10), _row("bertfast-int8", 30.0, n=100)
    cells = report._cells(few)
    assert cells[2] == "30.0 [27.0, 33.0] (n=10)" and cells[3] == "36.0" and cells[4] == "-"  # p99 needs 100 calls
    assert report._cells(many)[4] == "39.0"
    assert report._cells(_row("x", 30.0, n=4))[2] == "30.0 [-, -] (n=4)"
    line = report.case_line(few)
    assert "\n" not in line and "[case] b8-s128 bertfast-int8 float32: 30.0 ms (n=10)" in line
    failed = copy.deepcopy(few) | {"status": "wrong", "reason": "output differs " * 20 + "\nsecond line"}
    line = report.case_line(failed)
    assert line.startswith("[case] b8-s128 bertfast-int8 float32: WRONG: output differs")
    assert len(line) == report.LINE_WIDTH and line.endswith("...")


def test_finished_cases_are_printed_on_a_pipe_and_a_terminal_alike(monkeypatch, capsys):
    import bertfast.bench.runner as runner
    from bertfast.bench.cases import CaseResult

    result = CaseResult("bertfast-int8", "float32", "b1-s8", 1, 8, 8, False, "failed", "RuntimeError: boom")
    for tty in (False, True):
        monkeypatch.setattr("sys.stdout.isatty", lambda: tty)
        assert runner._finished([result]) == [result]
        assert "[case] b1-s8 bertfast-int8 float32: FAILED: RuntimeError: boom" in capsys.readouterr().out
