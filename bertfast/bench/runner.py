"""The comparative benchmark behind ``bertfast bench`` and ``python -m benchmarks``.

In one process and on the same inputs: for each dtype, transformers eager in fp32 (and, for half dtypes,
in that dtype) gives the reference outputs; then each provider in turn is prepared, checked against the
reference on every workload (outside tolerance: reported as wrong, not timed), timed, and released.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from bertfast.bench import options, parity, report
from bertfast.bench.cases import (Case, CaseResult, Timing, add_speedups, describe, dtype_name, measure,
                              measure_interleaved)
from bertfast.bench.providers import REGISTRY, Provider
from bertfast.bench.tasks import bench_task, task_checkpoint
from bertfast.bench.timing import (MIN_REPEATS, QUICK_MIN_REPEATS, PeakMemory, matmul_peak_tflops,
                                   release_memory)
from bertfast.bench.workloads import build_workloads, flops_formula, model_flops
from bertfast.checkpoint import WEIGHT_FILES
from bertfast.config import PRESETS, BertConfig, resolve_dtype
from bertfast.models.registry import architecture_of, read_config
from bertfast.hub import resolve_file

SCHEMA = "bertfast-bench/1"
QUICK_LEFT_OUT = "left out of --quick (the headline comparison only); ask for it with --providers, or run --full"
# third-party log lines that say nothing to someone reading the bench (onnxruntime.quantization logs this one on the
# root logger for every model it quantizes)
SILENCED_LOGS = ("Please consider to run pre-processing before quantization",)
INTERLEAVED_MEMORY = "not measured with --interleave (every provider is resident at once)"


@dataclass
class Settings:
    model: str
    dtypes: list[torch.dtype]
    batches: list[int]
    seqs: list[int]
    mixed: bool
    providers: list[str]
    timing: Timing
    interleave: bool  # time the providers in turns on each workload (fair on a machine whose load varies)
    seed: int
    out_dir: str
    quick: bool
    left_out: dict[str, str]  # provider -> why it was not selected
    task: str = options.DEFAULT_TASK  # what is measured: the encoder, or a task model's head (bench.tasks)

    @property
    def device(self) -> torch.device:
        return self.timing.device


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate the parsed options and fill in those left at None from ``options.FULL`` / ``options.QUICK``
    and ``options.DTYPES`` (the defaults depend on --quick and the device)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but CUDA is not available here (use --device cpu)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    defaults = options.QUICK if args.quick else options.FULL
    dtypes = list(dict.fromkeys(resolve_dtype(d) for d in args.dtype or options.DTYPES[device.type]))
    unknown = [p for p in args.providers or [] if p not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown provider(s) {unknown}; known providers: {', '.join(REGISTRY)}")
    if args.providers:
        names = list(dict.fromkeys(args.providers))
    else:
        names = list(options.QUICK_PROVIDERS) if args.quick else [
            n for n, cls in REGISTRY.items() if defaults.slow_providers or not cls.slow_to_prepare]
    repeats = _given(args.repeats, defaults.repeats)
    if args.quick and repeats < QUICK_MIN_REPEATS:
        raise ValueError(f"--quick times at least {QUICK_MIN_REPEATS} calls per case: --repeats {repeats} is too few")
    timing = Timing(device, warmup=_given(args.warmup, defaults.warmup), repeats=repeats,
                    max_time_s=_given(args.max_time, defaults.max_time_s),
                    min_repeats=QUICK_MIN_REPEATS if args.quick else MIN_REPEATS)
    return Settings(model=args.model, dtypes=dtypes, batches=list(args.batch or defaults.batches),
                    seqs=list(args.seq or defaults.seqs), mixed=args.mixed, providers=names, timing=timing,
                    interleave=_given(args.interleave, defaults.interleave), seed=args.seed, out_dir=args.out,
                    quick=args.quick,
                    left_out={n: QUICK_LEFT_OUT for n in REGISTRY if n not in names and not args.providers},
                    task=args.task)


def _given(value: Any, default: Any) -> Any:
    """An option's value, or its default where it was left at None."""
    return default if value is None else value


@dataclass
class ModelSource:
    config: BertConfig
    directory: str | None  # local checkpoint directory with weights; None: random weights are to be written
    weights: str  # where the weights come from, in words


def resolve_model(name: str) -> ModelSource:
    """Find ``name`` without touching the network: a local directory or the HF cache (real weights), or else
    a config (a preset's, or a directory's without weights) that ``checkpoint_dir`` gives random weights."""
    config_path = resolve_file(name, "config.json", required=False, local_files_only=True)
    if config_path is not None:
        directory = os.path.dirname(config_path)
        config = read_config(config_path)
        if any(resolve_file(name, f, required=False, local_files_only=True) for f in WEIGHT_FILES):
            return ModelSource(config, directory, f"real weights from {directory}")
        origin = f"the config of {directory} (it has no weights)"
    elif name in PRESETS:
        config, origin = BertConfig.from_preset(name), f"the {name} config (no checkpoint found locally)"
    else:
        raise FileNotFoundError(f"{name!r} is not a local checkpoint directory, not in the HuggingFace cache, and "
                                f"not a preset ({', '.join(PRESETS)}); bench never downloads")
    return ModelSource(config, None, f"random weights with {origin}; speed does not depend on the values")


def checkpoint_dir(source: ModelSource, scratch: str, seed: int) -> str:
    """The directory every provider loads: the real checkpoint, or a random encoder of the config's architecture
    (a BertModel for BERT's) saved to ``scratch``."""
    if source.directory is not None:
        return source.directory
    torch.manual_seed(seed)
    architecture_of(source.config).encoder_class(source.config).save_pretrained(scratch)
    return scratch


def plan(providers: dict[str, Provider],
         settings: Settings) -> tuple[dict[torch.dtype, list[Provider]], list[dict[str, str | None]]]:
    """Which providers run in each dtype, and which are skipped with their reasons (dtype None: not selected)."""
    runs: dict[torch.dtype, list[Provider]] = {dtype: [] for dtype in settings.dtypes}
    skipped = [{"provider": name, "dtype": None, "reason": reason} for name, reason in settings.left_out.items()]
    for dtype in settings.dtypes:
        for name, provider in providers.items():
            reason = (provider.available(settings.device, dtype) if settings.task in provider.tasks
                      else f"measures {', '.join(provider.tasks)} only, not --task {settings.task}")
            if reason is None:
                runs[dtype].append(provider)
            else:
                skipped.append({"provider": name, "dtype": dtype_name(dtype), "reason": reason})
    return runs, skipped


def run(settings: Settings) -> dict[str, Any]:
    """Run every selected provider on every workload and dtype; return the report (the JSON's content)."""
    started, load_start = time.strftime("%Y-%m-%dT%H:%M:%S"), os.getloadavg()
    task = bench_task(settings.task)
    providers = {name: REGISTRY[name]() for name in settings.providers}
    for provider in providers.values():
        provider.task = task
    runs, skipped = plan(providers, settings)
    source = resolve_model(settings.model)
    workloads = build_workloads(settings.batches, settings.seqs, settings.mixed,
                                source.config.max_sequence_length, settings.seed)
    batches = [task.inputs(w.inputs(source.config, settings.device)) for w in workloads]
    flops = [model_flops(source.config, w.lengths) for w in workloads]
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="bertfast-bench-") as scratch:
        model_dir = task_checkpoint(checkpoint_dir(source, scratch, settings.seed), scratch, task)
        peaks = {dtype: matmul_peak_tflops(settings.device, dtype) for dtype in settings.dtypes}
        total = sum(map(len, runs.values())) * len(workloads)
        with tqdm(total=total, desc="bench", unit="case", file=sys.stderr, disable=None) as bar:
            bar.set_postfix_str("transformers reference outputs, float32")
            fp32 = parity.fp32_outputs(model_dir, batches, settings.device, task)
            release_memory(settings.device)
            for dtype in settings.dtypes:
                bar.set_postfix_str(f"transformers reference outputs, {dtype_name(dtype)}")
                refs = parity.references(model_dir, batches, fp32, dtype, settings.device, task)
                if any(p.precision == "bfloat16" for p in runs[dtype]):  # their rule needs transformers' bf16 error
                    bar.set_postfix_str("transformers reference outputs, bfloat16 (for the bf16 providers)")
                    for ref, bf16 in zip(refs, parity.references(model_dir, batches, fp32, torch.bfloat16,
                                                                 settings.device, task)):
                        ref.bf16_error = bf16.half_error
                release_memory(settings.device)  # the reference models
                cases = [Case(w, b, ref, dtype, f, peaks[dtype])
                         for w, b, ref, f in zip(workloads, batches, refs, flops)]
                if settings.interleave:
                    results += _finished(_run_interleaved(runs[dtype], model_dir, cases, settings.timing, bar))
                else:
                    for provider in runs[dtype]:
                        results += _finished(_run_provider(provider, model_dir, cases, settings.timing, bar))
    add_speedups(results)
    return {
        "schema": SCHEMA,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": report.machine_info(settings.device, load_start),
        "model": {"name": settings.model, "weights": f"{source.weights}; {task.describe(source.config)}",
                  "config": source.config.to_dict()},
        "settings": {"task": settings.task, "device": str(settings.device),
                     "dtypes": [dtype_name(d) for d in settings.dtypes],
                     "batches": settings.batches, "seqs": settings.seqs, "mixed": settings.mixed,
                     "warmup": settings.timing.warmup, "repeats": settings.timing.repeats,
                     "max_time_s": settings.timing.max_time_s, "min_repeats": settings.timing.min_repeats,
                     "interleave": settings.interleave,
                     "seed": settings.seed, "quick": settings.quick},
        "flops_formula": flops_formula(source.config),
        "peak_memory": (INTERLEAVED_MEMORY if settings.interleave else PeakMemory.describe(settings.device)),
        "matmul_peak_tflops": {dtype_name(d): v for d, v in peaks.items()},
        "workloads": [{"name": w.name, "batch": w.batch, "seq_len": w.seq_len, "lengths": list(w.lengths),
                       "real_tokens": w.real_tokens, "mixed": w.mixed, "flops": f} for w, f in zip(workloads, flops)],
        "providers": [{"name": n, "description": p.description} for n, p in providers.items()],
        "skipped": skipped,
        "results": [dataclasses.asdict(r) for r in results],
    }


def _finished(results: list[CaseResult]) -> list[CaseResult]:
    """One flushed line per finished case as soon as it is done, on a terminal, a pipe or a log alike."""
    for r in results:
        tqdm.write(report.case_line(dataclasses.asdict(r)), file=sys.stdout)
    sys.stdout.flush()
    return results


class _DropLines(logging.Filter):
    """Drops the log records whose message starts with one of SILENCED_LOGS."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(SILENCED_LOGS)


def first_lines(settings: Settings) -> str:
    """On what, then what is run and where its files go: printed before anything is loaded."""
    cpu = report.cpu_name() if settings.device.type == "cpu" else torch.cuda.get_device_name(settings.device)
    flags = " ".join(sorted(report.cpu_info().flags))
    mode = "quick" if settings.quick else "full"
    return (f"bertfast bench ({mode}): {cpu} [{flags or 'no avx2'}], {os.cpu_count()} cpus\n"
            f"{len(settings.providers)} providers x {' '.join(map(dtype_name, settings.dtypes))}, results -> "
            f"{settings.out_dir}")


def _prepare(provider: Provider, model_dir: str, dtype: torch.dtype, device: torch.device) -> str | None:
    """Prepare ``provider``; None, or why it failed (e.g. torch.compile without a working toolchain)."""
    try:
        provider.prepare(model_dir, dtype, device)
    except Exception as e:  # reported on every workload, the run goes on
        return f"prepare failed: {describe(e)}"
    return None


def _run_provider(provider: Provider, model_dir: str, cases: list[Case], timing: Timing,
                  bar: tqdm) -> list[CaseResult]:
    """Prepare one provider, check and time it on every case, release it."""
    dtype = dtype_name(cases[0].dtype)
    bar.set_postfix_str(f"{provider.name} {dtype}: preparing")
    error = _prepare(provider, model_dir, cases[0].dtype, timing.device)
    results = []
    for case in cases:
        bar.set_postfix_str(f"{provider.name} {dtype} {case.workload.name}")
        results.append(case.result(provider.name, "failed", error) if error else measure(provider, case, timing))
        bar.update()
    provider.close()
    release_memory(timing.device)
    return results


def _run_interleaved(providers: list[Provider], model_dir: str, cases: list[Case], timing: Timing,
                     bar: tqdm) -> list[CaseResult]:
    """--interleave: prepare every provider, then time them in turns on each case; release them all."""
    bar.set_postfix_str(f"preparing {len(providers)} providers")
    errors = {p.name: _prepare(p, model_dir, cases[0].dtype, timing.device) for p in providers}
    ready = [p for p in providers if errors[p.name] is None]
    results = []
    for case in cases:
        bar.set_postfix_str(f"{dtype_name(case.dtype)} {case.workload.name}: {len(ready)} providers in turns")
        results += measure_interleaved(ready, case, timing)
        results += [case.result(name, "failed", error) for name, error in errors.items() if error is not None]
        bar.update(len(providers))
    for provider in providers:
        provider.close()
    release_memory(timing.device)
    return results


def provider_list(settings: Settings) -> str:
    """``--list-providers``: every provider, what it is, and whether it would run here."""
    providers = {name: cls() for name, cls in REGISTRY.items()}
    lines = [f"providers on {settings.device} ({', '.join(map(dtype_name, settings.dtypes))}):"]
    for name, provider in providers.items():
        reasons = {provider.available(settings.device, d) for d in settings.dtypes} - {None}
        state = "runs" if not reasons else "skipped: " + "; ".join(sorted(reasons))
        lines.append(f"  {name:<22} {provider.description}\n  {'':<22} -> {state}")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run the benchmark for parsed options: print the table, write JSON / markdown / PNG; return the report
    (None for --list-providers, which only prints)."""
    if args.task == options.CORPUS_TASK and not args.list_providers:
        from bertfast.bench import corpus

        return corpus.run(args.corpus, args.max_texts, args.out)
    if args.corpus is not None or args.max_texts is not None:
        raise ValueError(f"--corpus and --max-texts go with --task {options.CORPUS_TASK}")
    settings = settings_from_args(args)
    if args.list_providers:
        print(provider_list(settings))
        return None
    print(first_lines(settings), flush=True)
    drop = _DropLines()
    logging.getLogger().addFilter(drop)
    try:
        result = run(settings)
    finally:
        logging.getLogger().removeFilter(drop)
    paths = report.write(result, settings.out_dir)
    print(report.terminal(result))
    print("\nwrote:\n" + "\n".join(f"  {path}" for path in paths))
    return result


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    parser = argparse.ArgumentParser(prog=prog)
    options.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_from_args(args)
    except (ValueError, OSError) as e:  # bad options or missing files: a message, not a traceback
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
