"""Peak memory of one long text through ModernBERT on the CPU: bertfast (the pipelines' packed path) and transformers
(its default SDPA attention), at 1k / 4k / 8k tokens, each length in a fresh process. Two figures per run: the
peak of the bytes torch's CPU allocator holds during the forward above what it held before (``peak_bytes``, from the
profiler's memory events), and the process's peak RSS. Random weights of ModernBERT-base's shapes (22 layers, 768
wide, every third layer global, a 128-token window elsewhere) unless ``--model``. A script, not a timed test:

    python -m benchmarks.long_memory --out benchmarks/results/long-memory-<machine>-<date>.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable

import torch

LENGTHS = (1024, 4096, 8192)
BASE = dict(vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
            max_position_embeddings=8192, pad_token_id=50283)  # answerdotai/ModernBERT-base's sizes


def peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), the largest number of bytes torch's CPU allocator held during the call above what it held at its
    start), from the profiler's allocation and free events in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return result, peak


WORKER = """
import json, resource, sys, torch
from benchmarks.long_memory import peak_bytes
library, path, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
if library == "bertfast":
    import bertfast
    from bertfast.padding import PackedBatch
    model = bertfast.AutoModel.from_pretrained(path)
    vocab = model.config.vocab_size
    run = lambda ids: model(PackedBatch.from_token_lists([ids])).last_hidden_state
else:
    import transformers
    model = transformers.AutoModel.from_pretrained(path).eval()
    vocab = model.config.vocab_size
    run = lambda ids: model(torch.tensor([ids])).last_hidden_state
ids = torch.randint(10, vocab - 100, (length,)).tolist()
with torch.inference_mode():
    run(ids[:128])  # thread pools and first-call allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, peak = peak_bytes(lambda: run(ids))
print(json.dumps({"library": library, "tokens": length, "peak_allocated_bytes": peak,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "rss_before_bytes": before * 1024, "finite": bool(torch.isfinite(out).all())}))
"""


def measure(library: str, path: str, length: int) -> dict[str, Any]:
    """One forward of ``length`` tokens in a fresh process (the repository root on its path)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", WORKER, library, path, str(length)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode:
        return {"library": library, "tokens": length, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def base_checkpoint(out: str) -> str:
    """A random transformers ModernBertModel of ModernBERT-base's shapes, saved in ``out``."""
    import transformers

    torch.manual_seed(0)
    transformers.ModernBertModel(transformers.ModernBertConfig(**BASE)).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a ModernBERT folder (default: random weights of ModernBERT-base's shapes)")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="tokens, comma-separated")
    parser.add_argument("--libraries", default="bertfast,transformers")
    parser.add_argument("--out", help="also write the table (Markdown) and the rows (JSON) to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.model or base_checkpoint(scratch)
        rows = []
        for length in (int(n) for n in args.lengths.split(",")):
            for library in args.libraries.split(","):
                row = measure(library, path, length)
                rows.append(row)
                print(json.dumps(row), flush=True)
    lines = ["| tokens | library | peak allocated (MiB) | peak RSS (MiB) |", "|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['tokens']} | {row['library']} | error: {row['error']} | |")
        else:
            lines.append(f"| {row['tokens']} | {row['library']} | {row['peak_allocated_bytes'] / 2**20:,.0f} | "
                         f"{row['peak_rss_bytes'] / 2**20:,.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        from bertfast.atomic import replacing_file

        with replacing_file(args.out) as work, open(work, "w", encoding="utf-8") as f:  # one rename: all or none
            f.write(table + "\n\n```json\n" + json.dumps(rows, indent=1) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
