"""Model benchmarks: every provider of ``bertfast.bench.providers`` on the same batches (the parametrize axis).

    python -m pytest benchmarks/bench_model.py --benchmark-enable     # measure
    python -m pytest benchmarks/bench_model.py                        # CI: each case runs once, untimed

On CUDA: bert-base-uncased (real weights when in the HF cache, else random), float16, batch 8 and 32 x 128
tokens plus mixed lengths. Without CUDA: the "tiny" preset in float32 on small shapes, only to keep this
file working. Each case first checks the provider's output against transformers fp32 (the runner's parity
rule) and fails if it is outside tolerance; then it is timed with explicit warm-up rounds, CUDA
synchronised inside the timed target. ``extra_info`` holds the median and [0.2, 0.8] quantiles in ms and
the throughput in real tokens/s at those points. ``bertfast bench`` is the full comparison.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest
import torch

from bertfast.bench import parity
from bertfast.bench.providers import REGISTRY, Provider
from bertfast.bench.runner import checkpoint_dir, resolve_model
from bertfast.bench.timing import pedantic_summary, throughput_info
from bertfast.bench.workloads import Workload, build_workloads
from bertfast.config import BertConfig

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.float16 if CUDA else torch.float32
PRESET = "bert-base-uncased" if CUDA else "tiny"
WORKLOADS = (build_workloads([8, 32], [128], mixed=True, max_len=512) if CUDA
             else build_workloads([2], [16], mixed=True, max_len=64))
ROUNDS, WARMUP = (30, 5) if CUDA else (3, 1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return checkpoint_dir(resolve_model(PRESET), str(tmp_path_factory.mktemp("bench_model")), seed=0)


@pytest.fixture(scope="module")
def batches(model_dir) -> dict[str, dict[str, torch.Tensor]]:
    config = BertConfig.from_json_file(os.path.join(model_dir, "config.json"))
    return {w.name: w.inputs(config, DEVICE) for w in WORKLOADS}


@pytest.fixture(scope="module")
def references(model_dir, batches) -> dict[str, parity.Reference]:
    inputs = [batches[w.name] for w in WORKLOADS]
    fp32 = parity.fp32_outputs(model_dir, inputs, DEVICE)
    refs = parity.references(model_dir, inputs, fp32, DTYPE, DEVICE)
    if any(cls.precision == "bfloat16" and cls().available(DEVICE, DTYPE) is None for cls in REGISTRY.values()):
        for ref, bf16 in zip(refs, parity.references(model_dir, inputs, fp32, torch.bfloat16, DEVICE)):
            ref.bf16_error = bf16.half_error  # the bfloat16 rule of the providers with that precision
    return {w.name: ref for w, ref in zip(WORKLOADS, refs)}


@pytest.fixture(scope="module")
def prepared(model_dir) -> Iterator[Callable[[str], Provider]]:
    """``get(name)``: the provider, prepared once per module; skips (with the reason) one that cannot run here."""
    cache: dict[str, Provider] = {}

    def get(name: str) -> Provider:
        provider = REGISTRY[name]()
        reason = provider.available(DEVICE, DTYPE)
        if reason is None and provider.slow_to_prepare and not CUDA:
            reason = f"compiling on CPU takes about a minute per shape; `bertfast bench --providers {name}` measures it"
        if reason is not None:
            pytest.skip(reason)
        if name not in cache:
            provider.prepare(model_dir, DTYPE, DEVICE)
            cache[name] = provider
        return cache[name]

    yield get
    for provider in cache.values():
        provider.close()


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
@pytest.mark.parametrize("provider", list(REGISTRY))
def test_model(benchmark, provider: str, workload: Workload, prepared, references, batches):
    runner = prepared(provider)
    batch = batches[workload.name]
    with torch.inference_mode():
        verdict = parity.check(runner.run(batch), batch["attention_mask"], references[workload.name], DTYPE,
                               runner.precision)  # bf16 / int8 providers: their own precision's rule
    assert verdict.ok, f"{provider} on {workload.name}: {verdict}"

    def target() -> None:
        with torch.inference_mode():
            runner.run(batch)

    stats = pedantic_summary(benchmark, target, DEVICE, ROUNDS, WARMUP)
    if stats is not None:  # real tokens per second
        benchmark.extra_info.update({"device": torch.cuda.get_device_name() if CUDA else "cpu", "dtype": str(DTYPE),
                                     "model": PRESET, **throughput_info(stats, workload.real_tokens, "tokens/s")})
