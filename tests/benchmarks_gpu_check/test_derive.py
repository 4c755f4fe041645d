"""benchmarks/gpu_check/derive.py: pytest outcomes from a log, the kernel comparisons and the AUTO_GEMM
recommendation from pytest-benchmark's JSON, and the targets' verdicts -- on hand-made inputs."""
from __future__ import annotations

import pytest

from benchmarks.gpu_check.derive import Facts, auto_gemm, kernel_figures, pytest_outcomes, targets
from benchmarks.gpu_check.plan import GPU

LOG = """\
tests/kernels/test_gelu.py::test_gpu_bert_base[torch.float16-none] PASSED       [ 20%]
tests/kernels/test_gelu.py::test_gpu_bert_base[torch.float16-tanh] FAILED       [ 40%]
tests/test_graphs.py::test_real_capture SKIPPED (needs a CUDA GPU)              [ 60%]
tests/training/test_trainer.py::test_bert_base_autocast[bf16] ERROR             [ 80%]
tests/models/test_bert.py::test_half_precision[fp16] PASSED                      [100%]
"""
FINAL = "============ 1 failed, 2 passed, 1 skipped, 200 deselected, 1 error in 9.10s ============\n"


def test_pytest_outcomes_of_a_whole_log():
    outcomes = pytest_outcomes(LOG + FINAL)
    assert {k: outcomes[k] for k in ("passed", "failed", "error", "skipped")} == {
        "passed": 2, "failed": 1, "error": 1, "skipped": 1}
    assert outcomes["failures"] == ["tests/kernels/test_gelu.py::test_gpu_bert_base[torch.float16-tanh]",
                                    "tests/training/test_trainer.py::test_bert_base_autocast[bf16]"]
    assert outcomes["final_line"] == "1 failed, 2 passed, 1 skipped, 200 deselected, 1 error in 9.10s"


def test_pytest_outcomes_count_collection_errors_from_the_final_line():
    log = LOG + "ERROR tests/test_serve.py - ModuleNotFoundError: No module named 'tritonclient'\n"
    outcomes = pytest_outcomes(log + FINAL.replace("1 error", "2 errors"))
    assert (outcomes["passed"], outcomes["error"]) == (2, 2)


def test_pytest_outcomes_of_a_log_cut_short_by_the_time_cap():
    outcomes = pytest_outcomes("\n".join(LOG.splitlines()[:2]))
    assert (outcomes["passed"], outcomes["failed"], outcomes["final_line"]) == (1, 1, None)


def bench_case(test: str, ms: float, gbs: float = 0.0, **params) -> dict:
    param_id = "-".join(map(str, params.values()))
    return {"name": f"{test}[{param_id}]", "params": params,
            "extra_info": {"ms_median": ms, "throughput_median": gbs, "unit": "GB/s"}}


def dense_gelu(m: int, dtype: str, triton_ms: float, cublas_ms: float) -> list[dict]:
    params = {"shape": [m, 768, 3072], "dtype": f"UNSERIALIZABLE[torch.{dtype}]"}
    return [bench_case("test_dense_gelu", triton_ms, **params, provider="triton"),
            bench_case("test_dense_gelu", cublas_ms, **params, provider="cublas+bias_gelu"),
            bench_case("test_dense_gelu", cublas_ms / 2, **params, provider="cublas+gelu")]


def test_kernel_figures():
    raw = {"benchmarks": [
        bench_case("test_layer_norm", 0.02, 2400.0, shape=[4096, 768], provider="triton"),
        bench_case("test_layer_norm", 0.05, 960.0, shape=[4096, 768], provider="torch"),
        bench_case("test_attention", 0.5, shape=[32, 12, 128, 64], padded=True, provider="triton"),
        bench_case("test_attention", 0.8, shape=[32, 12, 128, 64], padded=True, provider="torch"),
        bench_case("test_varlen_attention", 0.25, shape=[32, 12, 128, 64], provider="triton-varlen"),
        bench_case("test_varlen_attention", 0.8, shape=[32, 12, 128, 64], provider="sdpa-padded"),
        {"name": "test_bias_gelu[untimed]", "params": {}, "extra_info": {}},  # --benchmark-disable: no figures
        *dense_gelu(4096, "float16", 1.0, 1.1), *dense_gelu(128, "float16", 0.2, 0.1),
        bench_case("test_rotary", 0.01, 1500.0, tokens=512, dtype="UNSERIALIZABLE[torch.float16]", provider="triton"),
        bench_case("test_rotary", 0.01, 1800.0, tokens=512, dtype="UNSERIALIZABLE[torch.bfloat16]", provider="triton"),
        bench_case("test_geglu", 0.02, 2700.0, tokens=8192, dtype="UNSERIALIZABLE[torch.float16]", provider="torch"),
        *(bench_case("test_window_attention", ms, shape=[4, 2048], dtype="UNSERIALIZABLE[torch.bfloat16]",
                     provider=provider) for ms, provider in ((0.1, "triton"), (0.5, "torch"), (0.4, "triton-full"))),
    ]}
    figures = kernel_figures(raw, copy_gbs=3000.0)
    assert figures["layer_norm"] == [{"shape": "4096x768", "triton_gbs": 2400.0, "triton_pct_of_copy": 80.0,
                                      "torch_gbs": 960.0, "torch_pct_of_copy": 32.0}]
    assert figures["bias_gelu"] == []
    assert figures["attention_vs_sdpa"] == [{"case": "32x12x128x64-padded", "triton_ms": 0.5, "torch_ms": 0.8,
                                             "speedup": pytest.approx(1.6)}]
    assert figures["varlen_vs_padded_sdpa"][0]["speedup"] == pytest.approx(3.2)
    assert [(r["case"], r["speedup"]) for r in figures["dense_gelu"]] == [
        ("4096-float16", pytest.approx(1.1)), ("128-float16", pytest.approx(0.5))]
    assert figures["auto_gemm"]["choice"] == "by-rows" and figures["auto_gemm"]["triton_rows"] == [4096]
    assert [(r["shape"], r["triton_pct_of_copy"]) for r in figures["rotary"]] == [
        ("512-float16", pytest.approx(50.0)), ("512-bfloat16", pytest.approx(60.0))]
    assert figures["geglu"] == [{"shape": "8192-float16", "torch_gbs": 2700.0, "torch_pct_of_copy": 90.0}]
    assert [(r["case"], r["speedup"]) for r in figures["window_vs_ref"]] == [("4x2048-bfloat16", pytest.approx(5.0))]
    assert figures["window_vs_full"][0]["speedup"] == pytest.approx(4.0)
    assert kernel_figures(raw, copy_gbs=None)["layer_norm"][0].keys() == {"shape", "triton_gbs", "torch_gbs"}


def gemm_rows(*cases: tuple[int, str, float]) -> list[dict]:
    """(M, dtype, speedup of Triton over cuBLAS + bias_gelu) -> dense_gelu rows."""
    return [{"case": f"{m}-{dtype}", "speedup": speedup} for m, dtype, speedup in cases]


@pytest.mark.parametrize("cases, choice", [
    ([(4096, "float16", 1.2), (128, "float16", 1.1), (4096, "bfloat16", 1.3), (128, "bfloat16", 1.05)], "triton"),
    ([(4096, "float16", 0.9), (128, "float16", 1.0)], "cublas"),  # a tie is no reason to switch
    ([(4096, "float16", 0.9), (128, "float16", 1.4), (4096, "bfloat16", 0.8), (128, "bfloat16", 1.2)], "by-rows"),
    ([(4096, "float16", 1.2), (4096, "bfloat16", 0.8)], "mixed"),
])
def test_auto_gemm_recommendation(cases, choice):
    assert auto_gemm(gemm_rows(*cases))["choice"] == choice
    assert auto_gemm([])["choice"] is None


def bench_row(provider: str, dtype: str, workload: str, ms: float, tflops: float = 0.0, status: str = "ok") -> dict:
    return {"provider": provider, "dtype": dtype, "workload": workload, "status": status,
            "reason": None if status == "ok" else "output differs", "latency_ms": {"median": ms}, "tflops": tflops}


def test_targets_verdicts():
    rows = [bench_row("bertfast-triton", "float16", "b1-s128", 0.25), bench_row("bertfast-cudagraphs", "float16",
                                                                                "b1-s128", 0.2),
            bench_row("transformers-eager", "float16", "b1-s128", 1.9),
            bench_row("bertfast-cudagraphs", "bfloat16", "b32-s128", 3.0, tflops=440.0),
            bench_row("transformers-sdpa", "bfloat16", "b32-s128", 6.0),
            bench_row("bertfast-triton", "float16", "b64-mixed", 1.0, status="wrong"),
            bench_row("transformers-sdpa", "float16", "b64-mixed", 9.0)]
    results = {"bench-float16": {"schema": "bertfast-bench/1", "results": rows},
               "ceilings": {"matmul_peak_tflops": {"bfloat16": 800.0}},
               "cold-start": {"first_result_s": 10.5, "backend": "triton"},
               "kernels": {"layer_norm": [{"shape": "4096x768", "triton_gbs": 2400.0, "triton_pct_of_copy": 80.0}]}}
    verdicts = {t["target"]: (t["verdict"], t["value"]) for t in targets(Facts(GPU, results))}
    assert verdicts == {
        "b1-s128 latency, float16": ("met", 0.2),  # the faster bertfast provider, at the limit
        "b1-s128 vs transformers eager, float16": ("missed", pytest.approx(9.5)),
        "b32-s128 share of the bf16 matmul peak": ("met", pytest.approx(55.0)),
        "b32-s128 vs transformers SDPA, bfloat16": ("met", pytest.approx(2.0)),
        "b64-mixed (mixed lengths) vs transformers SDPA, float16": ("not measured", None),
        "first call, fresh process": ("missed", 10.5),
        "LayerNorm + residual, share of copy bandwidth": ("met", 80.0),
    }
    mixed = next(t for t in targets(Facts(GPU, results)) if t["target"].startswith("b64-mixed"))
    assert mixed["source"] == "bertfast-triton wrong: output differs"
    assert all(t["verdict"] == "not measured" for t in targets(Facts(GPU, {})))
