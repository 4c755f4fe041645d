"""Presenting a benchmark report: machine description, terminal table, markdown, JSON and a PNG plot."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import time
from typing import Any

import torch

import bertfast
from bertfast.bench.cases import BASELINE
from bertfast.bench.timing import MIN_REPEATS

COLUMNS = ["provider", "median ms [q20, q80]", "p90 ms", "p99 ms", "seq/s", "tokens/s", "vs eager", "peak MB",
           "TFLOP/s", "max err"]
LEGEND = [
    "median ms [q20, q80]: latency of one call (median and its 0.2 / 0.8 quantiles); p90, p99 likewise",
    "tokens/s counts real tokens only (not padding); seq/s = batch / median",
    f"vs eager: {BASELINE} median / this median, same inputs, same dtype (>1 = faster)",
    "TFLOP/s: model FLOPs on real tokens / median; floor: model FLOPs / the matmul peak measured in this run",
    "max err: max |output - transformers fp32| over real tokens of last_hidden_state (checked before timing)",
]


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
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "versions": {"python": platform.python_version(), "bertfast": bertfast.__version__, "torch": torch.__version__,
                     **{p: _version(p) for p in ("transformers", "onnxruntime", "onnxruntime-gpu", "triton")}},
    }


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
    return [r["provider"], f"{_fmt(t['median'])} [{_fmt(t['q20'])}, {_fmt(t['q80'])}]", _fmt(t["p90"]),
            _fmt(t["p99"]), _fmt(r["sequences_per_s"]), _fmt(r["tokens_per_s"]), speedup, _fmt(r["peak_memory_mb"]),
            _fmt(r["tflops"]), f"{r['max_abs_error']:.2g}"]


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
        f"timing, per case: 1 untimed parity-check call, {s['warmup']} more warm-up calls, then up to {s['repeats']} "
        f"timed calls or {s['max_time_s']:g} s (at least {MIN_REPEATS} calls)",
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


def terminal(report: dict[str, Any]) -> str:
    """The report as aligned text: one table per dtype x workload, then the speedup summary."""
    lines = _header(report)
    for title, results in _groups(report):
        lines += ["", title] + _align([COLUMNS] + [_cells(r) for r in results])
    if report["results"]:
        lines += [""] + _align(_speedups(report))
    return "\n".join(lines + [""] + _footer(report) + LEGEND)


def markdown(report: dict[str, Any]) -> str:
    lines = ["# bertfast bench", ""] + [f"- {line}" for line in _header(report)]
    for title, results in _groups(report):
        lines += ["", f"## {title}", ""] + _markdown_table([COLUMNS] + [_cells(r) for r in results])
    if report["results"]:
        lines += ["", "## Summary", ""] + _markdown_table(_speedups(report))
    return "\n".join(lines + [""] + [f"- {line}" for line in _footer(report) + LEGEND]) + "\n"


def plot(report: dict[str, Any], path: str) -> None:
    """Throughput (real tokens/s) vs sequence length, one colour per provider, one panel per dtype x batch size:
    lines join the fixed-length workloads; a cross marks the mixed-length workload at its mean length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes, batches, seqs = (report["settings"][k] for k in ("dtypes", "batches", "seqs"))
    colors = {p["name"]: f"C{i % 10}" for i, p in enumerate(report["providers"])}  # one colour per provider
    fig, axes = plt.subplots(len(dtypes), len(batches), figsize=(4.5 * len(batches), 3.6 * len(dtypes)),
                             squeeze=False)
    for row, dtype in enumerate(dtypes):
        for col, batch in enumerate(batches):
            ax = axes[row][col]
            timed = [r for r in report["results"] if r["dtype"] == dtype and r["batch"] == batch
                     and r["tokens_per_s"] is not None]
            for provider in dict.fromkeys(r["provider"] for r in timed):
                mine = [r for r in timed if r["provider"] == provider]
                points = sorted((r["seq_len"], r["tokens_per_s"]) for r in mine if not r["mixed"])
                if points:
                    ax.plot(*zip(*points), marker="o", label=provider, color=colors[provider])
                for r in (r for r in mine if r["mixed"]):
                    ax.plot(r["real_tokens"] / r["batch"], r["tokens_per_s"], marker="x", markersize=9,
                            color=colors[provider], label=None if points else provider)
            ax.set_xscale("log", base=2)
            ax.set_xticks(seqs, [str(s) for s in seqs])
            ax.set_ylim(0, 1.15 * max((r["tokens_per_s"] for r in timed), default=1.0))
            ax.set_title(f"{dtype}, batch {batch}")
            ax.set_xlabel("sequence length (tokens); x: mixed lengths, at their mean", fontsize=8)
            ax.set_ylabel("real tokens / s")
            ax.grid(True, alpha=0.3)
            if timed:
                ax.legend(fontsize=7)
    fig.suptitle(f"{report['model']['name']} on {report['machine']['gpu'] or report['machine']['cpu']}")
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
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")
    with open(paths[1], "w", encoding="utf-8") as f:
        f.write(markdown(report))
    plot(report, paths[2])
    return paths
