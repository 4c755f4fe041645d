"""What the check shows: the one-screen summary (printed, and at the top of summary.md), summary.md's detail
sections, and the bench steps' reports merged into one for the runner's own markdown tables and PNG."""
from __future__ import annotations

from typing import Any

Results = dict[str, Any]


def _step(results: Results, name: str) -> dict[str, Any]:
    """A step's result ({} when it has none; a skipped step may have one, e.g. the versions)."""
    record = next((s for s in results["steps"] if s["name"] == name), None)
    return (record or {}).get("result") or {}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def machine_line(results: Results) -> str:
    """The GPU (nvidia-smi, else torch's view, else the CPU), driver, clocks and versions, on one line."""
    ceilings, machine = _step(results, "ceilings"), _step(results, "machine")
    smi = (machine.get("nvidia_smi") or {}).get("gpus") or [{}]
    device = ceilings.get("device") or {}
    name = (smi[0].get("name") or device.get("name") or (ceilings.get("machine") or {}).get("cpu")
            or machine.get("platform") or "an unknown machine")
    parts = [name + (f" {device['capability']}" if device.get("capability") else "")]
    if smi[0].get("driver_version"):
        parts.append(f"driver {smi[0]['driver_version']}, SM clock {smi[0].get('clocks.sm')} of "
                     f"{smi[0].get('clocks.max.sm')} MHz")
    packages = machine.get("packages") or {}
    parts.append(f"torch {ceilings.get('torch') or packages.get('torch')} (CUDA {ceilings.get('cuda')}), "
                 f"triton {packages.get('triton')}")
    return ", ".join(parts)


def _targets_table(results: Results) -> list[list[str]]:
    return [["target", "claim", "measured", "verdict", "from"]] + [
        [t["target"], t["claim"], t["figure"], t["verdict"], t["source"]] for t in results["targets"]]


def _align(rows: list[list[str]], last_width: int = 70) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + _clip(r[-1], last_width) for r in rows]


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _span(rows: list[dict[str, Any]], field: str, unit: str) -> str:
    """The range of one figure over a table's rows: '81%-86%', '1.31x-1.90x'."""
    values = [r[field] for r in rows if r.get(field) is not None]
    if not values:
        return "-"
    low, high = (f"{_num(v)}{unit}" for v in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"


def _kernel_lines(results: Results) -> list[str]:
    k = _step(results, "kernels")
    if not k:
        return []
    gemm = k["auto_gemm"]
    return [f"kernels: LayerNorm+residual {_span(k['layer_norm'], 'triton_pct_of_copy', '%')}, bias+GELU "
            f"{_span(k['bias_gelu'], 'triton_pct_of_copy', '%')} of copy bandwidth; vs SDPA: attention "
            f"{_span(k['attention_vs_sdpa'], 'speedup', 'x')}, varlen "
            f"{_span(k['varlen_vs_padded_sdpa'], 'speedup', 'x')}",
            f"ModernBERT kernels: rotary {_span(k.get('rotary', []), 'triton_pct_of_copy', '%')}, GeGLU "
            f"{_span(k.get('geglu', []), 'triton_pct_of_copy', '%')} of copy bandwidth; windowed attention vs "
            f"its torch reference {_span(k.get('window_vs_ref', []), 'speedup', 'x')}, vs no window "
            f"{_span(k.get('window_vs_full', []), 'speedup', 'x')}",
            f"ops.AUTO_GEMM = {_step(results, 'ceilings').get('auto_gemm', '?')!r} now; the data say "
            f"{gemm['choice']!r}: {_clip(gemm['why'], 90)}"]


def _tests_line(results: Results) -> str | None:
    t = _step(results, "tests")
    if not t:
        return None
    counts = ", ".join(f"{t[k]} {k}" for k in ("passed", "failed", "error", "skipped") if t.get(k))
    listed = f"; failing: {', '.join(t['failures'][:3])}" if t.get("failures") else ""
    return f"tests (pytest -m cuda): {counts or 'none ran'}{listed} [tests.log]"


def _graphs_line(results: Results) -> str | None:
    g = _step(results, "graphs")
    if not g:
        return None
    cells = [f"b{b['batch']}-s{b['seq']} {b['capture_s']:.2f} s {b['memory_mb']:.0f} MB" for b in g["buckets"]]
    return "CUDA-graph capture (time, memory): " + "; ".join(cells)


def _cold_line(results: Results) -> str | None:
    c = _step(results, "cold-start")
    if not c:
        return None
    return (f"cold start ({c['workload']}, {c['dtype']}, {c['backend']}): import {c['import_s']:.1f} s + load "
            f"{c['load_s']:.1f} s + first call {c['first_call_s']:.1f} s = {c['first_result_s']:.1f} s; "
            f"second call {_num(c['second_call_ms'])} ms")


def screen(results: Results) -> str:
    """The one-screen summary."""
    steps = results["steps"]
    counts = {s: sum(r["status"] == s for r in steps) for s in ("ran", "failed", "skipped", "cut")}
    lines = [f"bertfast GPU check ({results['mode']['name']}) on {machine_line(results)}",
             f"started {results['started']}, {results['elapsed_s']:.0f} s of --budget-s {results['budget_s']:g}"]
    if results["dry_run"]:
        lines.append("DRY RUN on the CPU with a tiny model: it shows the check works; its figures are no GPU claim")
    ceilings = _step(results, "ceilings")
    if ceilings.get("copy"):
        peaks = ", ".join(f"{d} {_num(v)}" for d, v in ceilings["matmul_peak_tflops"].items())
        lines.append(f"ceilings: copy bandwidth {_num(ceilings['copy']['best_gbs'])} GB/s (best), "
                     f"matmul peak {peaks} TFLOP/s")
    lines += ["", "GPU targets of the README:"] + _align(_targets_table(results), 60) + [""]
    lines += _kernel_lines(results)
    lines += [line for line in (_tests_line(results), _cold_line(results), _graphs_line(results)) if line]
    lines.append(f"steps: {', '.join(f'{n} {s}' for s, n in counts.items() if n)}")
    same: dict[tuple[str, str], list[str]] = {}  # (status, reason) -> steps: one line for each reason
    for r in steps:
        if r["status"] != "ran":
            same.setdefault((r["status"], r["reason"]), []).append(r["name"])
    lines += [f"  {status} {', '.join(names)}: {_clip(reason, 100)}" for (status, reason), names in same.items()]
    lines.append(f"wrote {results['out']}/: {' '.join(results['files'])}")
    return "\n".join(lines)


def _md_table(rows: list[list[Any]]) -> list[str]:
    return (["| " + " | ".join(map(str, rows[0])) + " |", "|" + "---|" * len(rows[0])]
            + ["| " + " | ".join("-" if c is None else _num(c) if isinstance(c, float) else str(c) for c in row)
               + " |" for row in rows[1:]])


def _kernel_sections(k: dict[str, Any]) -> list[str]:
    lines = [f"Copy bandwidth (best): {_num(k['copy_gbs'])} GB/s. Speedup = the peer's median / the Triton "
             "kernel's median (> 1: Triton is faster).", ""]
    for op in ("layer_norm", "bias_gelu", "rotary", "geglu"):
        if op not in k:  # results written before the op was benchmarked
            continue
        lines += [f"**{op}**", ""] + _md_table(
            [["shape", "triton GB/s", "% of copy", "torch GB/s", "% of copy"]]
            + [[r["shape"], r.get("triton_gbs"), r.get("triton_pct_of_copy"), r.get("torch_gbs"),
                r.get("torch_pct_of_copy")] for r in k[op]]) + [""]
    for title, key, ours, theirs in (("attention vs SDPA", "attention_vs_sdpa", "triton", "torch"),
                                     ("varlen attention vs SDPA on the padded batch", "varlen_vs_padded_sdpa",
                                      "triton-varlen", "sdpa-padded"),
                                     ("dense + GELU: Triton epilogue vs cuBLAS + bias_gelu", "dense_gelu", "triton",
                                      "cublas+bias_gelu"),
                                     ("windowed varlen attention (local layers) vs its torch reference",
                                      "window_vs_ref", "triton", "torch"),
                                     ("windowed varlen attention vs the same kernel without a window",
                                      "window_vs_full", "triton", "triton-full")):
        if key not in k:
            continue
        lines += [f"**{title}**", ""] + _md_table(
            [["case", f"{ours} ms", f"{theirs} ms", "speedup"]]
            + [[r["case"], r[f"{ours}_ms"], r[f"{theirs}_ms"], f"{r['speedup']:.2f}x"] for r in k[key]]) + [""]
    return lines + [f"ops.AUTO_GEMM recommendation: **{k['auto_gemm']['choice']}** ({k['auto_gemm']['why']})", ""]


def markdown(results: Results, bench_markdown: str | None) -> str:
    """summary.md: the screen, then the steps, every figure, and the runner's bench tables."""
    lines = ["# bertfast GPU check", "", "```", screen(results), "```", "", "## Steps", ""]
    lines += _md_table([["step", "status", "seconds", "limit s", "what", "reason"]] + [
        [s["name"], s["status"], s["seconds"], s["timeout_s"], s["what"], _clip(s["reason"] or "", 300)]
        for s in results["steps"]]) + [""]
    lines += ["## Targets", ""] + _md_table(_targets_table(results)) + [""]
    kernels, graphs = _step(results, "kernels"), _step(results, "graphs")
    if kernels:
        lines += ["## Kernel micro-benchmarks (kernels.json, kernels.log)", ""] + _kernel_sections(kernels)
    if graphs:
        lines += ["## CUDA graphs", ""] + _md_table([["bucket", "capture s", "memory MB", "first call ms",
                                                      "replay median ms"]] + [
            [f"b{b['batch']}-s{b['seq']}", b["capture_s"], b["memory_mb"], b["first_call_ms"],
             b["replay_ms"]["median"]] for b in graphs["buckets"]]) + [""]
    tests = _step(results, "tests")
    if tests:
        lines += ["## CUDA tests (tests.log)", "", f"pytest's last line: {tests.get('final_line')}", ""]
        lines += [f"- {name}" for name in tests.get("failures", [])] + [""]
    if bench_markdown:
        lines += ["## bertfast bench", "", "transformers-compile and onnxruntime run in processes of their own; "
                  "their 'vs eager' is against the transformers-eager timed there (results.json has it).", ""]
        lines += ["#" + line if line.startswith("#") else line for line in bench_markdown.splitlines()
                  if not line.startswith("# ")]
    return "\n".join(lines) + "\n"


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The bench steps' runner reports as one (the first result of each provider x dtype x workload kept), for
    the runner's markdown and plot; None without any."""
    if not reports:
        return None
    merged = {**reports[0], "settings": dict(reports[0]["settings"])}
    seen: set[tuple[str, str, str]] = set()
    merged["results"], merged["skipped"], merged["providers"], peaks = [], [], [], {}
    for rep in reports:
        for r in rep["results"]:
            if (r["provider"], r["dtype"], r["workload"]) not in seen:
                seen.add((r["provider"], r["dtype"], r["workload"]))
                merged["results"].append(r)
        merged["skipped"] += [s for s in rep["skipped"] if s not in merged["skipped"]]
        merged["providers"] += [p for p in rep["providers"] if p not in merged["providers"]]
        peaks.update({d: v for d, v in rep["matmul_peak_tflops"].items() if d not in peaks})
    merged["matmul_peak_tflops"] = peaks
    merged["settings"]["dtypes"] = list(dict.fromkeys(d for rep in reports for d in rep["settings"]["dtypes"]))
    return merged
