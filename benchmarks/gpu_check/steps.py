"""The steps that need torch, each run by the check in a process of its own (a crash, a hang or a CUDA error
stays inside one step, and the time cap is a kill):

    python -m benchmarks.gpu_check.steps KIND PARAMS.json RESULT.json

KIND is ``ceilings``, ``bench``, ``cold_start`` or ``graphs``; PARAMS holds the mode, the scratch folder and the
bench step's dtype and providers. RESULT gets the step's figures, or ``{SKIPPED: reason}``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

import bertfast
from bertfast import ops
from bertfast.bench import report, runner
from bertfast.bench.cases import Timing
from bertfast.bench.providers import REGISTRY
from bertfast.bench.timing import Summary, matmul_peak_tflops, time_calls, time_one
from bertfast.config import resolve_dtype
from bertfast.inputs import random_batch
from benchmarks.gpu_check.files import write_json
from benchmarks.gpu_check.plan import DRY_CONFIG_DIR, MODERNBERT_CONFIGS, SKIPPED, Mode

ROOT = Path(__file__).resolve().parents[2]
HALF_DTYPES = ("float16", "bfloat16")
Params = dict[str, Any]


def model_spec(mode: Mode, params: Params) -> str:
    """The runner's --model: the mode's preset, or the dry run's config folder (random weights); for a step with a
    model of its own (ModernBERT's), that model's config folder, written to the scratch folder at its first use."""
    if params.get("model"):
        folder = Path(params["scratch"], f"{params['model']}-{mode.name}-config")
        if not folder.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix="config-", dir=params["scratch"]))
            (tmp / "config.json").write_text(json.dumps(MODERNBERT_CONFIGS[mode.name]))
            os.rename(tmp, folder)  # whole or not at all
        return str(folder)
    return mode.model or os.path.join(params["scratch"], DRY_CONFIG_DIR)


def checkpoint(mode: Mode, params: Params) -> str:
    """A checkpoint folder of the mode's model (real weights when the HF cache has them, else random ones written
    once to the scratch folder), shared by the steps that load bertfast directly."""
    final = Path(params["scratch"], "checkpoint")
    if final.is_dir():
        return str(final)
    source = runner.resolve_model(model_spec(mode, params))
    tmp = tempfile.mkdtemp(prefix="checkpoint-", dir=params["scratch"])
    directory = runner.checkpoint_dir(source, tmp, seed=0)
    if directory != tmp:  # real weights, used where they are
        os.rmdir(tmp)
        return directory
    os.rename(tmp, final)  # whole or not at all: a step killed while saving leaves no half checkpoint behind
    return str(final)


def ceilings(mode: Mode, params: Params) -> dict[str, Any]:
    """Versions and device properties, which bench providers can run here (and why not); the copy bandwidth and
    the fp16 / bf16 matmul peak."""
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                "auto_gemm": ops.AUTO_GEMM}
    if mode.device == "cuda" and not torch.cuda.is_available():
        return {SKIPPED: f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) finds none; "
                           "`python -m benchmarks.gpu_check --dry-run` rehearses the check on a CPU", **versions}
    device = torch.device(mode.device)
    info: dict[str, Any] = {**versions, "machine": report.machine_info(device, os.getloadavg())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device"] = {"name": props.name, "capability": f"sm_{props.major}{props.minor}",
                          "memory_gib": props.total_memory / 2**30, "multiprocessors": props.multi_processor_count,
                          "cudnn": torch.backends.cudnn.version()}
    src = torch.empty(mode.copy_bytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    stats = Summary.of(time_calls(lambda: dst.copy_(src), device, mode.warmup, mode.repeats, mode.max_time_s))
    moved = 2 * mode.copy_bytes  # read + write, counted as the kernel benchmarks count their bytes
    info["copy"] = {"bytes": mode.copy_bytes, "median_gbs": moved / stats.median / 1e6,
                    "best_gbs": moved / stats.min / 1e6, "ms": dataclasses.asdict(stats)}
    info["providers"] = {d: {name: cls().available(device, resolve_dtype(d)) for name, cls in REGISTRY.items()}
                         for d in dict.fromkeys((mode.half_dtype, "bfloat16"))}  # dtype -> provider -> why not
    info["matmul_size"] = mode.matmul_size
    info["matmul_peak_tflops"] = {d: matmul_peak_tflops(device, resolve_dtype(d), mode.matmul_size)
                                  for d in HALF_DTYPES}
    return info


def bench(mode: Mode, params: Params) -> dict[str, Any]:
    """``bertfast bench`` (the runner's ``run``) on the mode's workloads in one dtype."""
    device, dtype = torch.device(mode.device), resolve_dtype(params["dtype"])
    settings = runner.Settings(
        model=model_spec(mode, params), dtypes=[dtype], batches=list(mode.batches), seqs=[mode.seq], mixed=True,
        providers=params["providers"], timing=Timing(device, mode.warmup, mode.repeats, mode.max_time_s),
        interleave=False, seed=0, out_dir=params["scratch"], quick=False, left_out={})
    return runner.run(settings)


def cold_start(mode: Mode, params: Params) -> dict[str, Any]:
    """benchmarks/gpu_check/cold_start.py in a fresh process with an empty Triton cache (so the first call
    compiles every kernel it uses) on the mode's latency workload."""
    model_dir = checkpoint(mode, params)
    with tempfile.TemporaryDirectory(prefix="triton-cache-") as cache:
        command = [sys.executable, "-m", "benchmarks.gpu_check.cold_start", model_dir, mode.device, mode.half_dtype,
                   str(mode.latency_batch), str(mode.seq)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "TRITON_CACHE_DIR": cache})
        wall = time.perf_counter() - start
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the fresh process exited with status {done.returncode}: {last}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_wall_s": wall,
            "workload": mode.latency_workload, "dtype": mode.half_dtype}


def graphs(mode: Mode, params: Params) -> dict[str, Any]:
    """``bertfast.optimize(model, cuda_graphs=True)`` on each of the mode's buckets: the first call (capture),
    the capture's seconds and device memory from the wrapper's stats, then the replay latency."""
    device, dtype = torch.device(mode.device), resolve_dtype(mode.half_dtype)
    model = bertfast.BertModel.from_pretrained(checkpoint(mode, params), dtype=dtype, device=device,
                                               local_files_only=True)
    fast = bertfast.optimize(model, cuda_graphs=True)
    buckets = []
    for batch, seq in mode.graph_shapes:
        inputs = {k: v.to(device) for k, v in random_batch(model.config, [seq] * batch).items()}  # (B, S) each
        call = functools.partial(fast, **inputs)
        before = fast.stats()["memory_bytes"] or 0
        with torch.inference_mode():
            first_ms = time_one(call, device)
            replay = Summary.of(time_calls(call, device, mode.warmup, mode.repeats, mode.max_time_s))
        stats = fast.stats()
        buckets.append({"batch": batch, "seq": seq, "capture_s": stats["captures"][(batch, seq)],
                        "memory_mb": ((stats["memory_bytes"] or 0) - before) / 2**20, "first_call_ms": first_ms,
                        "replay_ms": dataclasses.asdict(replay)})
    final = fast.stats()
    return {"dtype": mode.half_dtype, "buckets": buckets, "memory_mb": (final["memory_bytes"] or 0) / 2**20,
            "replays": final["replays"], "eager_calls": final["eager_calls"]}


KINDS: dict[str, Callable[[Mode, Params], dict[str, Any]]] = {
    "ceilings": ceilings, "bench": bench, "cold_start": cold_start, "graphs": graphs}


def main(argv: list[str]) -> int:
    kind, params_path, result_path = argv
    params = json.loads(Path(params_path).read_text())
    write_json(Path(result_path), KINDS[kind](Mode.from_dict(params["mode"]), params))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
