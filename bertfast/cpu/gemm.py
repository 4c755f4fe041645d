"""The float32 GEMM of the encoder's linear layers on the CPU, chosen for this machine by measurement.

Two implementations: "mkl" (``F.linear``: torch's default, MKL sgemm) and "onednn" (``PackedLinear``: the weight
reordered once, at load, into oneDNN's blocked layout with ``torch.ops.mkldnn._reorder_linear_weight`` and
multiplied with ``torch.ops.mkldnn._linear_pointwise``, which also fuses the bias and, for the intermediate
projection, the GELU). Which one wins depends on the CPU, so it is measured, never assumed: once per CPU model,
torch version, thread count and weight shape (N, K), at two row counts (128 and 1024 rows, b1-s128 and b8-s128),
and the result is kept in a JSON cache (``cache_path()``: ``BERTFAST_CPU_CACHE``, else
``~/.cache/bertfast/cpu-gemm.json``), written atomically (bertfast.atomic; ``measured_choice``, which
bertfast.cpu.int8 uses for its engine per shape too). A damaged cache is measured again and
rewritten, with a warning. ``BERTFAST_CPU_GEMM=mkl|onednn`` forces one (no measurement).

``PackedLinear`` is an ``nn.Linear`` with the same parameters and state-dict keys: it runs the packed product only
in float32 on the CPU without autograd; otherwise (training, another dtype or device, ONNX export) it is
``F.linear`` with the live weight. A weight changed in place (an optimizer step, ``load_state_dict``) is repacked
on the next call.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast import ops
from bertfast.atomic import replacing_file
from bertfast.cpu.info import cpu_info
from bertfast.models.registry import architecture_of

GEMMS = ("mkl", "onednn")
ROWS = (128, 1024)  # the row counts measured: one sequence of 128 tokens, eight of them
CACHE_FILE = "cpu-gemm.json"
CALLS = 5  # timed calls per implementation and row count (after one untimed)
_PLAIN: contextvars.ContextVar[bool] = contextvars.ContextVar("bertfast_plain_linear", default=False)


@contextlib.contextmanager
def plain_linear() -> Iterator[None]:
    """PackedLinear runs F.linear inside the block (this thread / task): e.g. the reference outputs an ONNX export
    is validated against, so that they are the product the exported graph has (MatMul, as MKL computes it)."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def cache_path() -> str:
    """Where measured choices are kept: ``BERTFAST_CPU_CACHE`` (a file path), else ~/.cache/bertfast/cpu-gemm.json."""
    return os.environ.get("BERTFAST_CPU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bertfast",
                                                                 CACHE_FILE)


def machine_key() -> str:
    """What a measurement holds for: the CPU model, torch's version and its thread count."""
    return f"{cpu_info().name} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _read_cache(path: str) -> dict:
    """The cache's content, or {} when there is none; a damaged one warns and counts as empty."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("not a JSON object of objects")
        return data
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        warnings.warn(f"the CPU GEMM cache {path} is unreadable ({e}): measuring again and rewriting it")
        return {}


def _write_cache(path: str, data: dict) -> None:
    """The whole cache written under a temporary name and renamed into place (a crash leaves the old file)."""
    with replacing_file(path) as staged:
        with open(staged, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)


def _seconds(fn) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - start) / CALLS


@torch.inference_mode()
def measure(out_features: int, in_features: int) -> dict[str, float]:
    """Seconds per call of each implementation for a (out_features, in_features) weight, summed over ROWS."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
    bias = torch.zeros(out_features)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight)
    times = dict.fromkeys(GEMMS, 0.0)
    for rows in ROWS:
        x = torch.randn(rows, in_features, generator=generator)
        times["mkl"] += _seconds(lambda: F.linear(x, weight, bias))
        times["onednn"] += _seconds(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))
    return times


@functools.lru_cache(maxsize=None)
def gemm_for(out_features: int, in_features: int) -> str:
    """"mkl" or "onednn" for a weight of this shape on this machine (forced, cached, or measured now and cached)."""
    forced = os.environ.get("BERTFAST_CPU_GEMM", "").strip().lower()
    if forced:
        if forced not in GEMMS:
            raise ValueError(f"BERTFAST_CPU_GEMM={forced!r} is not one of {GEMMS}")
        if forced == "onednn" and not _onednn_available():
            raise ValueError("BERTFAST_CPU_GEMM=onednn, but this torch build has no oneDNN (mkldnn) linear")
        return forced
    if not _onednn_available():
        return "mkl"
    return measured_choice(f"{out_features}x{in_features}", GEMMS, lambda: measure(out_features, in_features))


def measured_choice(key: str, choices: tuple[str, ...], measure_now: Callable[[], dict[str, float]]) -> str:
    """The fastest of ``choices`` for ``key`` on this machine: from the cache, or ``measure_now()`` (seconds per
    choice) and cached. Keys: a float32 weight shape ("2304x768"), or "int8 2304x768" (bertfast.cpu.int8)."""
    path, machine = cache_path(), machine_key()
    data = _read_cache(path)
    entry = data.get(machine, {}).get(key)
    if isinstance(entry, dict) and entry.get("choice") in choices:
        return entry["choice"]
    times = measure_now()
    choice = min(times, key=times.get)
    data.setdefault(machine, {})[key] = {"choice": choice, "seconds": times, "rows": list(ROWS)}
    try:
        _write_cache(path, data)
    except OSError as e:  # a read-only home: the choice holds for this process
        warnings.warn(f"cannot write the CPU GEMM cache {path} ({e}); set BERTFAST_CPU_CACHE to a writable file")
    return choice


class PackedLinear(nn.Linear):
    """nn.Linear whose CPU float32 inference runs oneDNN's product on a weight packed once (see the module doc)."""

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """The packed weight when the packed product applies to this call, else None (then F.linear)."""
        w = self.weight
        if (x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or w.device.type != "cpu"
                or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad)) or _PLAIN.get()
                or ops.exporting()):
            return None
        # inference tensors (made under torch.inference_mode) have no version counter: keyed by storage alone
        key = (w.data_ptr(), None if w.is_inference() else w._version)
        if getattr(self, "_packed_key", None) != key:
            with torch.inference_mode(False), torch.no_grad():
                self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach())
            self._packed_key = key
        return self._packed

    def __getstate__(self) -> dict:
        """Copies and pickles leave the packed weight out (oneDNN's opaque tensor has no storage): repacked on use."""
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_packed_key", None)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_weight(x)
        if packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")

    def gelu(self, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        """gelu(x @ weight.T + bias), the GELU fused into the packed product (erf or tanh, as ``approximate``)."""
        packed = self._packed_weight(x)
        if packed is None:
            return ops.dense_gelu(x, self.weight, self.bias, approximate)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "gelu", [], approximate)


def _packed(linear: nn.Linear) -> nn.Linear:
    """``linear`` as a PackedLinear where oneDNN measured faster for its shape (the same parameters), else itself."""
    if type(linear) is not nn.Linear or gemm_for(linear.out_features, linear.in_features) != "onednn":
        return linear
    with torch.device("meta"):
        packed = PackedLinear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    packed.weight, packed.bias = linear.weight, linear.bias
    return packed


def pack_linears(model: nn.Module) -> nn.Module:
    """The encoder's linear layers of a float32 CPU model as PackedLinear where that measures faster; in place."""
    for slot in architecture_of(model.config).linear_layers(model.base_model):
        slot.replace(_packed(slot.linear))
    return model


def gemm_path() -> str:
    """The float32 GEMM path bertfast takes here, in words (the bench header's)."""
    forced = os.environ.get("BERTFAST_CPU_GEMM", "").strip().lower()
    if not _onednn_available():
        return "MKL (torch F.linear); this torch has no oneDNN linear"
    choices = cached_choices()
    if forced:
        return f"{forced} (forced by BERTFAST_CPU_GEMM)"
    if not choices:
        return "measured at the first load (not yet measured on this machine)"
    return "measured per weight shape: " + ", ".join(f"{shape} {choice}" for shape, choice in sorted(choices.items()))


def cached_choices(prefix: str = "") -> dict[str, str]:
    """This machine's cached choices: float32 weight shapes (``prefix`` "") or int8 ones ("int8 "), prefix dropped."""
    cache = _read_cache(cache_path()).get(machine_key(), {})
    return {key[len(prefix):]: entry.get("choice") for key, entry in cache.items()
            if isinstance(entry, dict) and (key.startswith(prefix) if prefix else " " not in key)}
