"""Presenting a benchmark report: machine description, terminal table, markdown, JSON and a PNG plot."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import textwrap
import time
from typing import Any

import torch

from bertfast.atomic import staged_files
from bertfast.bench.cases import BASELINE
from bertfast.bench.timing import MIN_REPEATS, QUANTILE_MIN_CALLS
from bertfast.version import __version__
from bertfast.cpu import cpu_info

COLUMNS = ["provider", "precision", "median ms [q20, q80]", "p90 ms", "p99 ms", "seq/s", "tokens/s", "vs eager",
           "peak MB", "TFLOP/s", "max err", "min cos", "rule"]
TERMINAL_COLUMNS = ["provider", "precision", "median ms [q20, q80]", "tokens/s", "vs eager", "peak MB", "min cos"]
LINE_WIDTH = 120  # the most characters of a printed line (the JSON and markdown keep the details)
LEGEND = [
    "median ms [q20, q80]: latency of one call (median and its 0.2 / 0.8 quantiles); p90, p99 likewise",
    "tokens/s counts real tokens only (not padding); seq/s = batch / median",
    f"vs eager: {BASELINE} median / this median, same inputs, same dtype (>1 = faster)",
    "TFLOP/s: model FLOPs on real tokens / median; floor: model FLOPs / the matmul peak measured in this run",
    "max err: max |output - transformers fp32| over real tokens of last_hidden_state (checked before timing); "
    "min cos: the smallest cosine of a real token's output with transformers fp32's",
    "rule: the accuracy rule checked before timing: float32 (max err <= 1e-4 x max |ref|), bfloat16 / float16 (max "
    "err <= 2x transformers' own error in that precision + atol), int8 (cosine: min cos >= 0.99)",
    f"quantiles are printed only from enough timed calls ({', '.join(f'{k} >= {v}' for k, v in QUANTILE_MIN_CALLS.items())}); "
    "the JSON has them all, with n",
    "fastest: the provider with the lowest median per workload; bertfast / best peer: the best bertfast row's speed "
    "over the best other provider's (>1 = bertfast faster)",
]
BERTFAST = "bertfast"  # the prefix of our providers' names


def slugify(name: str) -> str:
    """'Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz' -> 'intel-xeon-gold-6248'."""
    name = re.sub(r"\((r|tm)\)|@.*$|\bcpu\b", " ", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def machine_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return slugify(torch.cuda.get_device_name(device))
    return f"{slugify(cpu_name())}-{os.cpu_count()}cpu"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device, load_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "slug": machine_slug(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_features": sorted(cpu_info().flags),
        "cpu_description": cpu_info().describe(),
        "cpu_paths": cpu_paths(),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "versions": {"python": platform.python_version(), "bertfast": __version__, "torch": torch.__version__,
                     **{p: _version(p) for p in ("transformers", "onnxruntime", "onnxruntime-gpu", "triton")}},
    }


def cpu_paths() -> dict[str, str]:
    """What bertfast runs its CPU matmuls with, per mode (the bench header's "GEMM path")."""
    from bertfast.cpu import gemm_path
    from bertfast.cpu.int8 import engine_path

    return {"float32": gemm_path(), "bfloat16": "torch F.linear in bf16 (oneDNN), fp32 accumulation"
            + ("" if cpu_info().native_bf16 else "; emulated: no avx512_bf16 / AMX here"),
            "int8": f"torch.ops.quantized.linear_dynamic, per-token scales; engine {engine_path()}"
            + ("" if cpu_info().vnni else " (no VNNI here: AVX2 int8 dot products)")}


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    size = abs(x)
    return f"{x:,.0f}" if size >= 100 else f"{x:.1f}" if size >= 10 else f"{x:.2f}" if size >= 1 else f"{x:.3g}"


def _short(reason: str, limit: int = 160) -> str:
    """A reason on one line for the tables (the JSON keeps it whole)."""
    first = reason.strip().splitlines()[0]
    return first if len(first) <= limit and first == reason.strip() else first[:limit] + " ... (whole text in the JSON)"


def _cells(r: dict[str, Any]) -> list[str]:
    """The COLUMNS of one result; a result that was not timed gets its status and reason instead."""
    if r["status"] != "ok":
        return [r["provider"], f"{r['status'].upper()} (not timed): {_short(r['reason'])}"]
    t = r["latency_ms"]
    speedup = "-" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}x"
    cosine = "-" if r.get("min_cosine") is None else f"{r['min_cosine']:.5f}"
    return [r["provider"], r.get("precision") or r["dtype"],
            f"{_fmt(t['median'])} [{_quantile(t, 'q20')}, {_quantile(t, 'q80')}] (n={t['n']})", _quantile(t, "p90"),
            _quantile(t, "p99"), _fmt(r["sequences_per_s"]), _fmt(r["tokens_per_s"]), speedup,
            _fmt(r["peak_memory_mb"]), _fmt(r["tflops"]), f"{r['max_abs_error']:.2g}", cosine, r.get("rule") or "-"]


def _quantile(t: dict[str, Any], name: str) -> str:
    """A latency quantile, or "-" where too few calls were timed to support it."""
    return _fmt(t[name]) if t["n"] >= QUANTILE_MIN_CALLS[name] else "-"


def case_line(r: dict[str, Any]) -> str:
    """One finished case on one line of at most LINE_WIDTH characters (printed as it finishes)."""
    head = f"[case] {r['workload']} {r['provider']} {r.get('precision') or r['dtype']}"
    if r["status"] != "ok":
        line = f"{head}: {r['status'].upper()}: {_short(r['reason'] or '')}"
    else:
        speedup = "" if r["speedup_vs_eager"] is None else f", {r['speedup_vs_eager']:.2f}x eager"
        cosine = "" if r.get("min_cosine") is None else f", cos {r['min_cosine']:.5f}"
        line = (f"{head}: {_fmt(r['latency_ms']['median'])} ms (n={r['latency_ms']['n']}), "
                f"{_fmt(r['tokens_per_s'])} tok/s{speedup}, err {r['max_abs_error']:.2g}{cosine}")
    return line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH - 3] + "..."


def fastest(report: dict[str, Any]) -> list[str]:
    """Per dtype x workload: the fastest provider, and the best bertfast row's speed over the best peer's."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["results"]:
        if r["status"] == "ok":
            groups.setdefault((r["dtype"], r["workload"]), []).append(r)
    lines = []
    for (dtype, workload), rows in groups.items():
        best = min(rows, key=lambda r: r["latency_ms"]["median"])
        ours = [r for r in rows if r["provider"].startswith(BERTFAST)]
        peers = [r for r in rows if not r["provider"].startswith(BERTFAST)]
        line = (f"fastest, {dtype} {workload}: {best['provider']} ({best.get('precision') or dtype}) "
                f"{_fmt(best['latency_ms']['median'])} ms")
        if ours and peers:
            mine = min(ours, key=lambda r: r["latency_ms"]["median"])
            peer = min(peers, key=lambda r: r["latency_ms"]["median"])
            ratio = peer["latency_ms"]["median"] / mine["latency_ms"]["median"]
            line += (f"; bertfast / best peer: {mine['provider']} vs {peer['provider']} = {ratio:.2f}x")
        lines.append(line)
    return lines


def _groups(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(title, results) for every dtype x workload that has results, in run order."""
    workloads = {w["name"]: w for w in report["workloads"]}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["results"]:
        groups.setdefault((r["dtype"], r["workload"]), []).append(r)
    titled = []
    for (dtype, name), results in groups.items():
        w = workloads[name]
        shape = (f"{w['batch']} sequences of {min(w['lengths'])}-{w['seq_len']} tokens, padded to {w['seq_len']}"
                 if w["mixed"] else f"{w['batch']} x {w['seq_len']} tokens")
        floor = next((r["floor_ms"] for r in results if r["floor_ms"] is not None), None)
        titled.append((f"{dtype}, {name}: {shape} ({w['real_tokens']:,} real tokens), floor {_fmt(floor)} ms",
                       results))
    return titled


def _header(report: dict[str, Any]) -> list[str]:
    m, model, s = report["machine"], report["model"], report["settings"]
    hardware = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} logical cores, {m['torch_threads']} torch threads)"
    peaks = ", ".join(f"{d} {v:.3g}" for d, v in report["matmul_peak_tflops"].items())
    load, load_end = m["load_average_start"][0], m["load_average_end"][0]
    return [
        f"bertfast bench: {model['name']} on {hardware} [{s['device']}], {report['started']}",
        f"model: {model['weights']}",
        f"load average (1 min): {load:.2f} at start, {load_end:.2f} at end, on {m['cpu_count']} cores (the benchmark "
        f"itself adds up to its {m['torch_threads']} threads)"
        + (": other processes were using the machine, timings are noisy" if load > 0.5 else ""),
        f"matmul peak measured in this run (TFLOP/s): {peaks}",
        *([f"CPU: {m['cpu_description']}", "bertfast CPU paths: " + "; ".join(
            f"{mode}: {path}" for mode, path in m["cpu_paths"].items())] if "cpu_paths" in m and not m["gpu"] else []),
        f"timing, per case: 1 untimed parity-check call, {s['warmup']} more warm-up calls, then up to {s['repeats']} "
        f"timed calls or {s['max_time_s']:g} s (at least {s.get('min_repeats', MIN_REPEATS)} calls)",
        f"peak memory: {report['peak_memory']}",
    ]


def _footer(report: dict[str, Any]) -> list[str]:
    lines = [f"  {s['provider']}" + (f" ({s['dtype']})" if s["dtype"] else "") + f": {s['reason']}"
             for s in report["skipped"]]
    return (["skipped:"] + lines if lines else []) + [f"FLOPs: {report['flops_formula']}"]


def _speedups(report: dict[str, Any]) -> list[list[str]]:
    """The summary grid: one row per dtype x workload, one column per provider, its speedup vs eager."""
    providers = list(dict.fromkeys(r["provider"] for r in report["results"]))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in report["results"]:
        value = r["status"] if r["status"] != "ok" else "-" if r["speedup_vs_eager"] is None else \
            f"{r['speedup_vs_eager']:.2f}x"
        cells.setdefault((r["dtype"], r["workload"]), {})[r["provider"]] = value
    return [[f"speedup vs {BASELINE}", *providers]] + [
        [f"{dtype}, {workload}", *(row.get(p, "") for p in providers)] for (dtype, workload), row in cells.items()]


def _align(rows: list[list[str]]) -> list[str]:
    """Text table: first column left-aligned, the others right-aligned; a short row (a result that was not
    timed: provider, status) runs on after its first cell."""
    full = [row for row in rows if len(row) == len(rows[0])]
    widths = [max(len(row[i]) for row in full) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            if len(row) == len(rows[0]) else "  " + row[0].ljust(widths[0]) + "  " + "  ".join(row[1:])
            for row in rows]


def _markdown_table(rows: list[list[str]]) -> list[str]:
    width = len(rows[0])
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
    return lines + ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows[1:]]


def _narrow(cells: list[str]) -> list[str]:
    """The terminal's cells of a result: TERMINAL_COLUMNS of COLUMNS (a result that was not timed: as it is)."""
    return [cells[COLUMNS.index(c)] for c in TERMINAL_COLUMNS] if len(cells) == len(COLUMNS) else cells


def _wrapped(lines: list[str]) -> list[str]:
    """Each line cut into pieces of at most LINE_WIDTH characters (the pieces after the first indented)."""
    return [piece for line in lines for piece in
            (textwrap.wrap(line, LINE_WIDTH, subsequent_indent="    ", break_on_hyphens=False) or [""])]


def terminal(report: dict[str, Any]) -> str:
    """The report as text of at most LINE_WIDTH columns: one table per dtype x workload (TERMINAL_COLUMNS; the
    files have them all), then the speedup summary."""
    lines = _header(report)
    for title, results in _groups(report):
        lines += ["", title] + _align([TERMINAL_COLUMNS] + [_narrow(_cells(r)) for r in results])
    if report["results"]:
        lines += [""] + _align(_speedups(report)) + [""] + fastest(report)
    return "\n".join(_wrapped(lines + [""] + _footer(report) + LEGEND))


def markdown(report: dict[str, Any]) -> str:
    lines = ["# bertfast bench", ""] + [f"- {line}" for line in _header(report)]
    for title, results in _groups(report):
        lines += ["", f"## {title}", ""] + _markdown_table([COLUMNS] + [_cells(r) for r in results])
    if report["results"]:
        lines += ["", "## Summary", ""] + _markdown_table(_speedups(report)) + [""] + [
            f"- {line}" for line in fastest(report)]
    return "\n".join(lines + [""] + [f"- {line}" for line in _footer(report) + LEGEND]) + "\n"


def plot(report: dict[str, Any], path: str) -> None:
    """Throughput (real tokens/s) as horizontal bars, one panel per dtype x workload (mixed-length workloads say so
    in their title), one bar per provider and precision, its value written beside it: nothing overlaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = {w["name"]: w for w in report["workloads"]}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["results"]:
        if r["tokens_per_s"] is not None:
            groups.setdefault((r["dtype"], r["workload"]), []).append(r)
    colors = {p["name"]: f"C{i % 10}" for i, p in enumerate(report["providers"])}
    panels = list(groups.items()) or [(("-", "-"), [])]
    height = max(len(rows) for _, rows in panels) * 0.38 + 1.2
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), height), squeeze=False)
    for ax, ((dtype, name), rows) in zip(axes[0], panels):
        rows = sorted(rows, key=lambda r: r["tokens_per_s"])
        labels = [f"{r['provider']} ({r.get('precision') or dtype})" for r in rows]
        values = [r["tokens_per_s"] for r in rows]
        ax.barh(range(len(rows)), values, color=[colors.get(r["provider"], "C0") for r in rows])
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=7)
        w = workloads.get(name)
        kind = "" if w is None else (f"mixed lengths {min(w['lengths'])}-{w['seq_len']}" if w["mixed"]
                                     else f"{w['batch']} x {w['seq_len']} tokens")
        ax.set_title(f"{dtype}, {name}: {kind}", fontsize=9)
        ax.set_xlabel("real tokens / s (higher is better)", fontsize=8)
        ax.set_xlim(0, 1.25 * max(values, default=1.0))
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{report['model']['name']} on {report['machine']['gpu'] or report['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(report: dict[str, Any], out_dir: str) -> list[str]:
    """Write <out_dir>/<machine>-<date>.json, .md and .png (a time suffix when that name is taken)."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{report['machine']['slug']}-{time.strftime('%Y-%m-%d')}")
    if os.path.exists(stem + ".json"):
        stem += time.strftime("-%H%M%S")
    paths = [stem + ".json", stem + ".md", stem + ".png"]
    with staged_files(out_dir) as staging:  # all three appear together, or none (a crash leaves no half file)
        staged = [os.path.join(staging, os.path.basename(p)) for p in paths]
        with open(staged[0], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        with open(staged[1], "w", encoding="utf-8") as f:
            f.write(markdown(report))
        plot(report, staged[2])
    return paths
