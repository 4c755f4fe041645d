"""From the steps' raw output to the figures the summary reports: pytest outcomes from a log, the kernel
comparisons from pytest-benchmark's JSON (with the ``ops.AUTO_GEMM`` recommendation), and the README's GPU
targets, each with its measured figure and met / missed. Standard library only."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.gpu_check.plan import OWN_MODEL_STEPS, Mode

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
_TEST_LINE = re.compile(r"^(\S+::\S.*?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.MULTILINE)
_LINE_OUTCOME = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped", "XFAIL": "xfailed",
                 "XPASS": "xpassed"}
_FINAL_LINE = re.compile(r"^=+ (.*\b(?:passed|failed|skipped|error|errors|deselected|no tests ran)\b.*) =+$",
                         re.MULTILINE)
_FINAL_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)\b")
MAX_LISTED_FAILURES = 20


def pytest_outcomes(log: str) -> dict[str, Any]:
    """Outcome counts, from pytest's final line when it got that far (it also counts collection errors), else
    from the per-test lines of ``pytest -v`` (a log cut short by the time cap still counts what ran); and the
    failed / erroring tests."""
    counts = dict.fromkeys(OUTCOMES, 0)
    failures: list[str] = []
    for test, outcome in _TEST_LINE.findall(log):
        counts[_LINE_OUTCOME[outcome]] += 1
        if outcome in ("FAILED", "ERROR") and test not in failures:
            failures.append(test)
    final = _FINAL_LINE.findall(log)
    if final:
        counts = dict.fromkeys(OUTCOMES, 0)
        for number, outcome in _FINAL_COUNT.findall(final[-1]):
            counts[outcome.rstrip("s") if outcome.startswith("error") else outcome] = int(number)
    return {**counts, "failures": failures[:MAX_LISTED_FAILURES], "failures_not_listed":
            max(0, len(failures) - MAX_LISTED_FAILURES), "final_line": final[-1] if final else None}


def _benchmarks(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(test function, params, extra_info) of every timed case in pytest-benchmark's JSON."""
    return [(b["name"].split("[")[0], b.get("params") or {}, b["extra_info"]) for b in raw.get("benchmarks", [])
            if "ms_median" in b.get("extra_info", {})]


def _shape(params: dict[str, Any]) -> str:
    return "x".join(map(str, params.get("shape", ())))


def _dtype(params: dict[str, Any]) -> str:
    """bench_kernels' dtype parameter, which pytest-benchmark writes as 'UNSERIALIZABLE[torch.float16]'."""
    match = re.search(r"torch\.(\w+)", str(params.get("dtype", "")))
    return match.group(1) if match else "default"


def _pairs(cases: list[tuple[str, dict[str, Any], dict[str, Any]]], test: str, key: Callable[[dict], tuple],
           ours: str, theirs: str) -> list[dict[str, Any]]:
    """For each parameter set of ``test``: the medians (ms) of providers ``ours`` and ``theirs`` and
    ``speedup`` = theirs / ours (> 1: ours is faster)."""
    medians: dict[tuple, dict[str, float]] = {}
    for name, params, info in cases:
        if name == test:
            medians.setdefault(key(params), {})[params["provider"]] = info["ms_median"]
    rows = []
    for k, by_provider in medians.items():
        if ours in by_provider and theirs in by_provider:
            rows.append({"case": "-".join(map(str, k)), f"{ours}_ms": by_provider[ours],
                         f"{theirs}_ms": by_provider[theirs], "speedup": by_provider[theirs] / by_provider[ours]})
    return rows


def _bandwidth(cases: list[tuple[str, dict[str, Any], dict[str, Any]]], test: str,
               copy_gbs: float | None) -> list[dict[str, Any]]:
    """GB/s of the Triton kernel and the torch reference per shape (and dtype, for the cases that have one: then
    "shape" reads "512-float16"), and each as % of the copy bandwidth."""
    rows: dict[str, dict[str, Any]] = {}
    for name, params, info in cases:
        if name == test:
            shape = _shape(params) or str(params.get("tokens", ""))
            shape = f"{shape}-{_dtype(params)}" if "dtype" in params else shape
            row = rows.setdefault(shape, {"shape": shape})
            row[f"{params['provider']}_gbs"] = info["throughput_median"]
            if copy_gbs:
                row[f"{params['provider']}_pct_of_copy"] = 100 * info["throughput_median"] / copy_gbs
    return list(rows.values())


def auto_gemm(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``ops.AUTO_GEMM`` should be, from dense_gelu's medians: "triton" where the fused Triton GEMM beats
    cuBLAS + bias_gelu on every (rows, dtype) case, "cublas" where it wins none, else "by-rows" (a rule on the
    row count, when the winner depends on M alone) or "mixed" (it depends on the dtype too)."""
    if not rows:
        return {"choice": None, "why": "no dense_gelu results (the kernel benchmarks did not run or failed)"}
    wins = {row["case"]: row["speedup"] > 1 for row in rows}  # case: "M-dtype"
    detail = ", ".join(f"M={r['case'].replace('-', ' ')} {r['speedup']:.2f}x" for r in rows)
    if all(wins.values()):
        return {"choice": "triton", "why": f"the Triton GEMM is faster in every case ({detail})"}
    if not any(wins.values()):
        return {"choice": "cublas", "why": f"cuBLAS + bias_gelu is faster in every case ({detail})"}
    by_rows: dict[str, set[bool]] = {}
    for case, win in wins.items():
        by_rows.setdefault(case.split("-")[0], set()).add(win)
    if all(len(w) == 1 for w in by_rows.values()):
        triton_rows = sorted((m for m, w in by_rows.items() if w == {True}), key=int)
        return {"choice": "by-rows", "triton_rows": [int(m) for m in triton_rows],
                "why": f"the winner depends on the row count: Triton at M = {', '.join(triton_rows)} ({detail})"}
    return {"choice": "mixed", "why": f"the winner depends on the dtype as well as M ({detail})"}


def kernel_figures(raw: dict[str, Any], copy_gbs: float | None) -> dict[str, Any]:
    """The comparisons behind the kernel targets, from pytest-benchmark's JSON of benchmarks/bench_kernels.py.
    Speedups are the peer's median / the Triton kernel's median (> 1: Triton is faster)."""
    cases = _benchmarks(raw)
    gemm = _pairs(cases, "test_dense_gelu", lambda p: (p["shape"][0], _dtype(p)), "triton", "cublas+bias_gelu")
    return {
        "copy_gbs": copy_gbs,
        "layer_norm": _bandwidth(cases, "test_layer_norm", copy_gbs),
        "bias_gelu": _bandwidth(cases, "test_bias_gelu", copy_gbs),
        "attention_vs_sdpa": _pairs(cases, "test_attention",
                                    lambda p: (_shape(p), "padded" if p["padded"] else "dense"), "triton", "torch"),
        "varlen_vs_padded_sdpa": _pairs(cases, "test_varlen_attention", lambda p: (_shape(p),), "triton-varlen",
                                        "sdpa-padded"),
        "rotary": _bandwidth(cases, "test_rotary", copy_gbs),
        "geglu": _bandwidth(cases, "test_geglu", copy_gbs),
        "window_vs_ref": _pairs(cases, "test_window_attention", lambda p: (_shape(p), _dtype(p)), "triton", "torch"),
        "window_vs_full": _pairs(cases, "test_window_attention", lambda p: (_shape(p), _dtype(p)), "triton",
                                 "triton-full"),
        "dense_gelu": gemm,
        "auto_gemm": auto_gemm(gemm),
        "cases": len(cases),
    }


@dataclass(frozen=True)
class Target:
    """A GPU claim of the README: met when the measured value is <= ``limit`` (``at_most``) or >= it."""

    name: str  # with {latency}, {throughput}, {mixed} (the mode's workloads) and {half} (its half dtype)
    limit: float
    at_most: bool
    unit: str  # "ms", "x", "%" or "s"
    measure: Callable[["Facts"], tuple[float | None, str]]  # (value, where it comes from) or (None, why not)

    def evaluate(self, facts: "Facts") -> dict[str, Any]:
        value, source = self.measure(facts)
        m = facts.mode
        name = self.name.format(latency=m.latency_workload, throughput=m.throughput_workload, mixed=m.mixed_workload,
                                half=m.half_dtype)
        claim = f"{'<=' if self.at_most else '>='} {self.limit:g}{'' if self.unit in 'x%' else ' '}{self.unit}"
        if value is None:
            return {"target": name, "claim": claim, "value": None, "figure": "-", "verdict": "not measured",
                    "source": source}
        met = value <= self.limit if self.at_most else value >= self.limit
        return {"target": name, "claim": claim, "value": value, "figure": _fmt(value, self.unit),
                "verdict": "met" if met else "missed", "source": source}


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3g}{unit}" if unit in ("x", "%") else f"{value:.3g} {unit}"


@dataclass
class Facts:
    """What the targets are computed from: the mode and each step's result (None: it did not run)."""

    mode: Mode
    results: dict[str, dict[str, Any] | None]  # step name -> result

    def bench_rows(self) -> list[dict[str, Any]]:
        """Every provider x workload result of every bench step on the mode's model (a step with a model of its
        own, ModernBERT's, is reported beside the targets, never read by them)."""
        return [row for name, result in self.results.items() if name not in OWN_MODEL_STEPS and result
                and "results" in result and "schema" in result for row in result["results"]]

    def row(self, provider: str, dtype: str, workload: str) -> dict[str, Any] | None:
        return next((r for r in self.bench_rows() if (r["provider"], r["dtype"], r["workload"]) ==
                     (provider, dtype, workload) and r["status"] == "ok"), None)

    def bertfast(self, dtype: str, workload: str) -> tuple[dict[str, Any] | None, str]:
        """The faster of bertfast's GPU providers on a case, or why there is none."""
        timed = [r for r in (self.row(p, dtype, workload) for p in self.mode.bertfast) if r is not None]
        if timed:
            best = min(timed, key=lambda r: r["latency_ms"]["median"])
            return best, best["provider"]
        untimed = [f"{r['provider']} {r['status']}: {r['reason']}" for r in self.bench_rows()
                   if r["provider"] in self.mode.bertfast and (r["dtype"], r["workload"]) == (dtype, workload)]
        return None, "; ".join(untimed) or f"bertfast was not run on {workload} in {dtype}"

    def step_value(self, step: str, *keys: str) -> Any:
        value: Any = self.results.get(step)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value


def _latency(facts: Facts) -> tuple[float | None, str]:
    best, source = facts.bertfast(facts.mode.half_dtype, facts.mode.latency_workload)
    return (best["latency_ms"]["median"], f"{source}, median") if best else (None, source)


def _ratio_to(peer: str, dtype: Callable[[Mode], str], workload: Callable[[Mode], str]) -> Callable:
    """peer median / bertfast median on one case (both timed in the same run)."""

    def measure(facts: Facts) -> tuple[float | None, str]:
        d, w = dtype(facts.mode), workload(facts.mode)
        best, source = facts.bertfast(d, w)
        other = facts.row(peer, d, w)
        if best is None or other is None:
            return None, source if best is None else f"{peer} was not timed on {w} in {d}"
        return other["latency_ms"]["median"] / best["latency_ms"]["median"], f"{peer} / {source}, medians"

    return measure


def _share_of_peak(facts: Facts) -> tuple[float | None, str]:
    best, source = facts.bertfast("bfloat16", facts.mode.throughput_workload)
    peak = facts.step_value("ceilings", "matmul_peak_tflops", "bfloat16")
    if best is None or not peak:
        return None, source if best is None else "the bf16 matmul peak was not measured (ceilings step)"
    return 100 * best["tflops"] / peak, f"{source}: {best['tflops']:.3g} of {peak:.3g} TFLOP/s"


def _first_call(facts: Facts) -> tuple[float | None, str]:
    seconds = facts.step_value("cold-start", "first_result_s")
    if seconds is None:
        return None, "the cold-start step did not run"
    return seconds, f"import -> first result in a fresh process, backend {facts.step_value('cold-start', 'backend')}"


def _layer_norm(facts: Facts) -> tuple[float | None, str]:
    rows = facts.step_value("kernels", "layer_norm") or []
    row = next((r for r in rows if r["shape"] == facts.mode.layer_norm_shape), None)
    if row is None or "triton_pct_of_copy" not in row:
        return None, f"no Triton LayerNorm result at {facts.mode.layer_norm_shape} with a measured copy bandwidth"
    return row["triton_pct_of_copy"], f"{row['triton_gbs']:.3g} GB/s at {row['shape']}, median"


TARGETS = (
    Target("{latency} latency, {half}", 0.20, True, "ms", _latency),
    Target("{latency} vs transformers eager, {half}", 10, False, "x",
           _ratio_to("transformers-eager", lambda m: m.half_dtype, lambda m: m.latency_workload)),
    Target("{throughput} share of the bf16 matmul peak", 55, False, "%", _share_of_peak),
    Target("{throughput} vs transformers SDPA, bfloat16", 2, False, "x",
           _ratio_to("transformers-sdpa", lambda m: "bfloat16", lambda m: m.throughput_workload)),
    Target("{mixed} (mixed lengths) vs transformers SDPA, {half}", 2.5, False, "x",
           _ratio_to("transformers-sdpa", lambda m: m.half_dtype, lambda m: m.mixed_workload)),
    Target("first call, fresh process", 10, True, "s", _first_call),
    Target("LayerNorm + residual, share of copy bandwidth", 80, False, "%", _layer_norm),
)


def targets(facts: Facts) -> list[dict[str, Any]]:
    return [t.evaluate(facts) for t in TARGETS]
