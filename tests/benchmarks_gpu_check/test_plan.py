"""benchmarks/gpu_check/plan.py: the budget admits steps in order and cuts what no longer fits; the modes."""
from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks.gpu_check.plan import BASELINE, DRY_RUN, GPU, RESERVE_S, STEPS, Budget, Mode, Step
from bertfast.bench import cases
from bertfast.bench.providers import REGISTRY


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def step(name: str, gpu_s: float, cap_s: float) -> Step:
    return Step(name, "bench", name, gpu_s=gpu_s, dry_s=1, cap_s=cap_s)


def test_budget_runs_steps_while_they_fit_and_cuts_the_rest():
    clock = Clock()
    budget = Budget(RESERVE_S + 100, clock)  # 100 s for the steps
    assert budget.admit(step("a", 30, 40), GPU) == (40, None)  # its cap, below the 100 s left
    clock.now += 50
    assert budget.admit(step("b", 45, 300), GPU) == (50, None)  # what is left, below its cap
    clock.now += 35
    timeout, reason = budget.admit(step("c", 20, 60), GPU)  # 15 s left, needs 20
    assert timeout is None
    assert reason == f"cut to stay inside --budget-s {RESERVE_S + 100:g}: 15 s left, it needs about 20 s"
    assert budget.admit(step("d", 10, 60), GPU) == (15, None)  # a smaller, later step still fits
    clock.now += 30
    assert budget.admit(step("e", 1, 5), GPU)[1].startswith("cut to stay inside --budget-s 105: 0 s left")


def test_budget_uses_the_mode_estimate():
    clock = Clock()
    budget = Budget(RESERVE_S + 10, clock)
    slow_on_gpu = Step("x", "bench", "x", gpu_s=60, dry_s=2, cap_s=90)
    assert budget.admit(slow_on_gpu, DRY_RUN) == (10, None)
    assert budget.admit(slow_on_gpu, GPU)[0] is None


@pytest.mark.parametrize("seconds", [0, -5])
def test_budget_must_be_positive(seconds):
    with pytest.raises(ValueError, match="--budget-s must be positive"):
        Budget(seconds)


def test_steps_are_named_once_and_start_with_the_machine():
    names = [s.name for s in STEPS]
    assert len(set(names)) == len(names) and names[:2] == ["machine", "ceilings"]
    assert all(s.cap_s >= s.gpu_s and s.cap_s >= s.dry_s for s in STEPS)


@pytest.mark.parametrize("mode", [GPU, DRY_RUN], ids=lambda m: m.name)
def test_mode_survives_json(mode):
    assert Mode.from_dict(json.loads(json.dumps(dataclasses.asdict(mode)))) == mode


def test_mode_workloads():
    assert GPU.batches == (1, 32, 64)
    assert (GPU.latency_workload, GPU.throughput_workload, GPU.mixed_workload) == ("b1-s128", "b32-s128", "b64-mixed")
    assert DRY_RUN.batches == (1, 2)  # throughput and mixed share a batch size: asked for once
    assert GPU.dtype("half") == "float16" and DRY_RUN.dtype("half") == "float32" and GPU.dtype("bfloat16") == "bfloat16"


def test_bench_steps_always_time_the_baseline():
    assert BASELINE == cases.BASELINE  # plan.py cannot import it: the check's own process never imports torch
    bench = next(s for s in STEPS if s.name == "bench-bfloat16")
    assert bench.bench_providers(GPU) == ["bertfast-triton", "bertfast-cudagraphs", "transformers-sdpa", BASELINE]
    assert bench.bench_providers(DRY_RUN) == ["bertfast-torch", "transformers-sdpa", BASELINE]
    assert all(set(s.providers) <= set(REGISTRY) for s in STEPS) and set(GPU.bertfast) <= set(REGISTRY)
