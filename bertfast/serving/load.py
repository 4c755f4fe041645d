"""A closed-loop load generator for a served model (the load test and ``benchmarks/bench_serve.py``): N clients,
each its own ``tritonclient`` connection over HTTP or gRPC, send their share of the requests one after the
other; every response is kept with its request, with its latency. Needs ``tritonclient[grpc]``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertfast.tokenizer import BertTokenizer
from bertfast.training.pretraining import DEMO_CORPUS

PROTOCOLS = ("http", "grpc")
REQUEST_TIMEOUT_S = 120.0


@dataclass
class LoadResult:
    """Per request, in the order given: the outputs (None after an error), the error message, the latency."""

    outputs: list[dict[str, np.ndarray] | None]
    errors: list[str | None]
    latencies_ms: list[float]
    wall_s: float  # first request sent to last response received

    @property
    def requests_per_s(self) -> float:
        return len(self.outputs) / self.wall_s


def mixed_length_texts(tokenizer: BertTokenizer, n: int, low: int, high: int, seed: int = 0) -> list[str]:
    """``n`` texts of the demo corpus, of lengths drawn uniformly in [low, high] tokens ([CLS] and [SEP] included;
    exact as long as no word has more than ``high - low`` tokens). Words are whitespace-separated, so a text's
    token count is the sum of its words' counts."""
    with open(DEMO_CORPUS, encoding="utf-8") as f:
        words = f.read().split()
    counts = [len(ids) for ids in tokenizer(words, add_special_tokens=False)["input_ids"]]
    rng = np.random.default_rng(seed)
    texts = []
    for target in rng.integers(low, high + 1, size=n).tolist():
        end = start = int(rng.integers(len(words)))
        total = 2  # [CLS] and [SEP]
        while total + counts[end % len(words)] <= target or total < low:
            total += counts[end % len(words)]
            end += 1
        texts.append(" ".join(words[i % len(words)] for i in range(start, end)))
    return texts


def client_module(protocol: str):
    """``tritonclient.http`` or ``tritonclient.grpc``."""
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return module


def infer_inputs(protocol: str, request: dict[str, np.ndarray]) -> list:
    """``InferInput``s of BYTES arrays shaped (N, 1)."""
    module = client_module(protocol)
    inputs = []
    for name, array in request.items():
        tensor = module.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def connect(protocol: str, url: str):
    """A client of ``url`` (host:port) with request timeouts set; close it after use."""
    module = client_module(protocol)
    if protocol == "http":
        return module.InferenceServerClient(url, connection_timeout=REQUEST_TIMEOUT_S,
                                            network_timeout=REQUEST_TIMEOUT_S)
    return module.InferenceServerClient(url)


def run_load(urls: dict[str, str], model: str, requests: Sequence[dict[str, np.ndarray]], outputs: Sequence[str],
             clients: int = 8) -> LoadResult:
    """Send ``requests`` to ``model`` from ``clients`` concurrent clients (client k sends requests k, k +
    clients, ...; even clients over HTTP, odd ones over gRPC when ``urls`` has both "http" and "grpc")."""
    protocols = [p for p in PROTOCOLS if p in urls]
    if not protocols:
        raise ValueError(f"urls must name at least one of {PROTOCOLS}, got {sorted(urls)}")
    n = len(requests)
    result = LoadResult([None] * n, [None] * n, [0.0] * n, 0.0)

    def client(k: int) -> None:
        protocol = protocols[k % len(protocols)]
        with_timeout = {"client_timeout": REQUEST_TIMEOUT_S} if protocol == "grpc" else {}
        connection = connect(protocol, urls[protocol])
        try:
            for i in range(k, n, clients):
                start = time.perf_counter()
                try:
                    response = connection.infer(model, infer_inputs(protocol, requests[i]), **with_timeout)
                    result.outputs[i] = {name: response.as_numpy(name) for name in outputs}
                except Exception as e:  # noqa: BLE001  (the caller counts and reports errors)
                    result.errors[i] = str(e)
                result.latencies_ms[i] = (time.perf_counter() - start) * 1e3
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - start
    return result
