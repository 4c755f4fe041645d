"""benchmarks/gpu_check/summary.py: the bench steps' reports merged into one for the runner's tables and plot."""
from __future__ import annotations

from benchmarks.gpu_check.summary import merge_reports


def report(dtype: str, rows: list[tuple[str, float]], skipped: list[dict]) -> dict:
    return {"schema": "bertfast-bench/1", "settings": {"dtypes": [dtype], "batches": [1]},
            "providers": [{"name": p, "description": p} for p, _ in rows], "skipped": skipped,
            "matmul_peak_tflops": {dtype: 700.0 if dtype == "float16" else 710.0},
            "results": [{"provider": p, "dtype": dtype, "workload": "b1-s128", "latency": ms} for p, ms in rows]}


def test_merge_keeps_the_first_result_of_each_case():
    no_ort = {"provider": "onnxruntime", "dtype": "float16", "reason": "no CUDAExecutionProvider"}
    fp16 = report("float16", [("bertfast-triton", 0.2), ("transformers-eager", 2.0)], [no_ort])
    bf16 = report("bfloat16", [("bertfast-triton", 0.21)], [])
    compile16 = report("float16", [("transformers-eager", 2.1), ("transformers-compile", 0.9)], [no_ort])
    merged = merge_reports([fp16, bf16, compile16])
    assert [(r["provider"], r["dtype"], r["latency"]) for r in merged["results"]] == [
        ("bertfast-triton", "float16", 0.2), ("transformers-eager", "float16", 2.0),
        ("bertfast-triton", "bfloat16", 0.21), ("transformers-compile", "float16", 0.9)]
    assert merged["settings"]["dtypes"] == ["float16", "bfloat16"] and merged["skipped"] == [no_ort]
    assert [p["name"] for p in merged["providers"]] == ["bertfast-triton", "transformers-eager", "transformers-compile"]
    assert merged["matmul_peak_tflops"] == {"float16": 700.0, "bfloat16": 710.0}
    assert fp16["settings"]["dtypes"] == ["float16"] and len(fp16["results"]) == 2  # the inputs are left alone
    assert merge_reports([]) is None
