"""bertfast/bench/cases.py: measuring a case, here the interleaved timing of several providers."""
from __future__ import annotations

import torch

from bertfast.bench import parity
from bertfast.bench.cases import Case, Timing, measure_interleaved
from bertfast.bench.providers import BertfastTorch
from bertfast.bench.workloads import build_workloads
from bertfast.config import BertConfig

CPU = torch.device("cpu")


def test_interleaved_timing_takes_turns_and_rotates():
    order = []

    class Recorder(BertfastTorch):
        def __init__(self, name):
            self.name = name

        def run(self, batch):
            order.append(self.name)
            return self.output

    workload = build_workloads([1], [4], mixed=False, max_len=8)[0]
    batch = workload.inputs(BertConfig(vocab_size=10))
    out = torch.ones(1, 4, 2)
    case = Case(workload, batch, parity.Reference(out[0], None), torch.float32, flops=100, peak_tflops=1.0)
    providers = [Recorder("a"), Recorder("b")]
    for p in providers:
        p.output = out
    results = measure_interleaved(providers, case, Timing(CPU, warmup=1, repeats=3, max_time_s=60))
    # parity checks, then one warm-up round and 3 timed rounds, the order rotating every round
    assert order == ["a", "b"] + ["b", "a"] + ["a", "b"] + ["b", "a"] + ["a", "b"]
    assert [r.latency_ms.n for r in results] == [3, 3] and all(r.status == "ok" for r in results)
