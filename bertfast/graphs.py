"""CUDA graphs by shape bucket: ``bertfast.optimize(model, cuda_graphs=True)``.

A call's batch size and sequence length round up to the nearest bucket; each bucket is captured once,
lazily, on first use, and replayed afterwards: no recompilation and no re-capture for a new shape
inside a bucket. Inputs are copied into the bucket's static buffers (extra rows and columns are
padding, masked out), every graph allocates from one shared memory pool, and outputs are sliced back
to the call's shape and cloned (a later replay would overwrite the static ones).

A multiple-choice model's (batch, num_choices, sequence) inputs bucket by batch and sequence, with one
capture per number of choices.

Inference only: training mode, ``output_hidden_states``/``output_attentions``, explicit ``position_ids``,
labels, or a shape beyond the largest bucket run the plain model (counted in ``stats()["eager_calls"]``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from bertfast.heads.tasks import BertForMultipleChoice, check_choice_inputs
from bertfast.inputs import check_inputs, trusted_inputs
from bertfast.outputs import axes_of
from bertfast.pretrained import BertPreTrainedModel

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_SEQ_BUCKETS = (16, 32, 64, 128, 256, 384, 512)


class Graph(Protocol):
    def replay(self) -> None: ...


# capture(fn) -> (graph, outputs): records fn once; graph.replay() recomputes outputs in place.
Capture = Callable[[Callable[[], Any]], tuple[Graph, Any]]


class CudaGraphCapture:
    """Real capture: warm-up on a side stream (compiles kernels, creates cuBLAS workspaces), then capture
    into one memory pool shared by every graph of the wrapper."""

    def __init__(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, fn: Callable[[], Any]) -> tuple[Graph, Any]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = fn()
        return graph, outputs


def bucket_for(value: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket >= value, or None when value exceeds every bucket."""
    return next((b for b in buckets if b >= value), None)


def _check_buckets(name: str, buckets: Sequence[int], limit: int | None = None) -> tuple[int, ...]:
    values = tuple(buckets)
    if not values or any(not isinstance(b, int) or b < 1 for b in values) or list(values) != sorted(set(values)):
        raise ValueError(f"{name} must be increasing positive integers, got {buckets!r}")
    if limit is not None and values[-1] > limit:
        raise ValueError(f"{name} go up to {values[-1]} but the model takes sequences of at most {limit} tokens")
    return values


@dataclass
class _Bucket:
    graph: Graph
    # static input_ids, attention_mask (bool), token_type_ids: (b, s), or (b, num_choices, s) for multiple choice
    inputs: dict[str, torch.Tensor]
    outputs: Any  # the model's output dataclass over static tensors
    capture_seconds: float
    memory_bytes: int | None


@dataclass
class GraphStats:
    captures: dict[tuple[int, ...], float] = field(default_factory=dict)  # bucket -> capture seconds
    memory_bytes: int | None = None  # device memory taken by all captures (None off CUDA)
    replays: int = 0
    eager_calls: int = 0


class GraphedModel:
    """Callable with the wrapped model's forward signature; see the module docstring."""

    def __init__(self, model: BertPreTrainedModel, batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
                 seq_buckets: Sequence[int] = DEFAULT_SEQ_BUCKETS, capture: Capture | None = None,
                 validate: bool = True):
        if capture is None:
            if model.device.type != "cuda":
                raise RuntimeError(f"CUDA graphs need the model on a CUDA device, it is on {model.device}; "
                                   f"move it with model.to('cuda') or call optimize(model, cuda_graphs=False)")
            capture = CudaGraphCapture()
        self.model = model.eval()
        self.batch_buckets = _check_buckets("batch_buckets", batch_buckets)
        self.seq_buckets = _check_buckets("seq_buckets", seq_buckets, model.config.max_sequence_length)
        self._capture = capture
        self.validate = validate
        self.choices = isinstance(model, BertForMultipleChoice)  # inputs (B, num_choices, S), not (B, S)
        self._buckets: dict[tuple[int, ...], _Bucket] = {}
        self._stats = GraphStats()
        self._warned = False

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def stats(self) -> dict[str, Any]:
        """Buckets captured (with capture seconds), memory taken by the graphs, replays and eager calls."""
        return dataclasses.asdict(self._stats)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                 output_hidden_states: bool = False, output_attentions: bool = False, **labels: Any) -> Any:
        """``labels`` (and BertModel's ``return_packed``) are passed on; anything but defaults runs the plain model."""
        eager = (self.model.training or output_hidden_states or output_attentions or position_ids is not None
                 or any(v is not None and v is not False for v in labels.values()))
        key = None
        if not eager:
            with contextlib.nullcontext() if self.validate else trusted_inputs():
                check = check_choice_inputs if self.choices else check_inputs
                mask = check(self.config, self.device, input_ids, attention_mask, token_type_ids)
            sizes = dict(zip(("batch", "choice", "sequence") if self.choices else ("batch", "sequence"),
                             input_ids.shape))
            key = (bucket_for(sizes["batch"], self.batch_buckets), *input_ids.shape[1:-1],
                   bucket_for(sizes["sequence"], self.seq_buckets))
        if key is None or None in key:
            if key is not None and not self._warned:
                warnings.warn(f"input of shape {tuple(input_ids.shape)} is beyond the largest bucket "
                              f"({self.batch_buckets[-1]}, {self.seq_buckets[-1]}): running without CUDA graphs")
                self._warned = True
            self._stats.eager_calls += 1
            return self.model(input_ids, attention_mask, token_type_ids, position_ids,
                              output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                              **labels)
        bucket = self._buckets.get(key) or self._new_bucket(key, input_ids.device)
        static = bucket.inputs
        region = tuple(slice(n) for n in input_ids.shape)  # the call's corner of the static buffers
        static["attention_mask"].zero_()
        static["attention_mask"][region] = True if mask is None else mask
        static["input_ids"][region].copy_(input_ids)
        static["token_type_ids"][region] = 0 if token_type_ids is None else token_type_ids
        bucket.graph.replay()
        self._stats.replays += 1
        return _slice_outputs(bucket.outputs, sizes)

    def _new_bucket(self, shape: tuple[int, ...], device: torch.device) -> _Bucket:
        inputs = {"input_ids": torch.zeros(shape, dtype=torch.long, device=device),
                  "attention_mask": torch.zeros(shape, dtype=torch.bool, device=device),
                  "token_type_ids": torch.zeros(shape, dtype=torch.long, device=device)}

        def run() -> Any:
            with torch.no_grad(), trusted_inputs():
                return self.model(**inputs)

        on_cuda = device.type == "cuda"
        before = torch.cuda.memory_allocated(device) if on_cuda else None
        start = time.perf_counter()
        graph, outputs = self._capture(run)
        seconds = time.perf_counter() - start
        taken = torch.cuda.memory_allocated(device) - before if on_cuda else None
        bucket = _Bucket(graph, inputs, outputs, seconds, taken)
        self._buckets[shape] = bucket
        self._stats.captures[shape] = seconds
        if taken is not None:
            self._stats.memory_bytes = (self._stats.memory_bytes or 0) + taken
        return bucket


def _slice_outputs(outputs: Any, sizes: dict[str, int]) -> Any:
    """Cut each static output back to the call's sizes along its axes (batch, then sequence or choice: see
    ``bertfast.outputs.axes_of``) and clone it."""
    sliced = {}
    for f in dataclasses.fields(outputs):
        value = getattr(outputs, f.name)
        if isinstance(value, torch.Tensor):
            value = value[tuple(slice(sizes[axis]) for axis in axes_of(f))].clone()
        sliced[f.name] = value
    return type(outputs)(**sliced)


def optimize(model: BertPreTrainedModel, cuda_graphs: bool = True,
             batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS, seq_buckets: Sequence[int] = DEFAULT_SEQ_BUCKETS,
             capture: Capture | None = None, validate: bool = True) -> BertPreTrainedModel | GraphedModel:
    """Wrap an inference model in CUDA graphs by (batch, sequence) bucket; ``cuda_graphs=False`` returns it
    unchanged. ``capture`` replaces the CUDA capture (tests emulate it on CPU). ``validate=False`` skips the
    input value checks (one host synchronisation per call): only for inputs known to be valid, since an
    out-of-range id then fails inside a kernel or reads the wrong row."""
    if not isinstance(model, BertPreTrainedModel):
        raise TypeError(f"optimize expects a bertfast model, got {type(model).__name__}")
    if not cuda_graphs:
        return model
    return GraphedModel(model, batch_buckets, seq_buckets, capture, validate)
