"""The GPU check's plan: the two modes (the device run and the CPU dry run), the steps in order of importance
with what each is expected to cost, and the budget that cuts the least important ones.

Standard library only: the check's own process never imports torch, so a broken torch or Triton makes steps
fail with their reason instead of stopping the check.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

RESERVE_S = 5.0  # kept back from --budget-s for writing the files at the end
SKIPPED = "step_skipped"  # the key of a step's result that says why it cannot run here


@dataclass(frozen=True)
class Mode:
    """Everything that differs between the device run and the dry run; steps read their shapes from here."""

    name: str  # "gpu" or "dry-run"
    device: str  # "cuda" or "cpu"
    model: str | None  # the runner's --model (a preset); None: DRY_CONFIG, written to the scratch folder
    seq: int  # the fixed-length workloads' sequence length
    latency_batch: int  # b1-s128: the latency targets
    throughput_batch: int  # b32-s128: the % of matmul peak and vs-SDPA targets
    mixed_batch: int  # b64 of 16-512 mixed lengths: the padding-free target
    warmup: int  # untimed calls per case (bench, ceilings, graph replays)
    repeats: int  # most timed calls per case
    max_time_s: float  # stop timing a case after this (at least timing.MIN_REPEATS calls, or `repeats` if fewer)
    copy_bytes: int  # size of the device-to-device copy that measures memory bandwidth
    matmul_size: int  # edge of the square matmul that measures the fp16 / bf16 peak
    half_dtype: str  # what the "half" steps run in (the fp16 bench, cold start, graphs, the fp16 targets)
    bertfast: tuple[str, ...]  # the bertfast providers the bench steps time and the targets are read from
    graph_shapes: tuple[tuple[int, int], ...]  # (batch, seq) buckets whose CUDA-graph capture is measured
    test_paths: tuple[str, ...]  # where `pytest -m cuda` looks for the needs_cuda tests
    layer_norm_shape: str  # bench_kernels' row shape of the LayerNorm target ("rows x width")
    threads: int | None  # OMP_NUM_THREADS of the step processes; None: torch's default

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Mode":
        """The inverse of ``dataclasses.asdict`` through JSON (which turns the tuples into lists)."""
        return cls(**{**data, "graph_shapes": tuple(tuple(shape) for shape in data["graph_shapes"]),
                      "test_paths": tuple(data["test_paths"]), "bertfast": tuple(data["bertfast"])})

    def dtype(self, step_dtype: str) -> str:
        """A step's dtype in this mode: "half" is ``half_dtype``."""
        return self.half_dtype if step_dtype == "half" else step_dtype

    @property
    def batches(self) -> tuple[int, ...]:
        """The runner's --batch: with one --seq and mixed lengths, it gives every target workload (and
        b64-s128, b32-mixed besides: the grid is batches x seqs, mixed at each batch > 1)."""
        return tuple(dict.fromkeys((self.latency_batch, self.throughput_batch, self.mixed_batch)))

    @property
    def latency_workload(self) -> str:
        return f"b{self.latency_batch}-s{self.seq}"

    @property
    def throughput_workload(self) -> str:
        return f"b{self.throughput_batch}-s{self.seq}"

    @property
    def mixed_workload(self) -> str:
        return f"b{self.mixed_batch}-mixed"


GPU = Mode(name="gpu", device="cuda", model="bert-base-uncased", seq=128, latency_batch=1, throughput_batch=32,
           mixed_batch=64, warmup=3, repeats=30, max_time_s=2.0, copy_bytes=2**30, matmul_size=8192,
           half_dtype="float16", bertfast=("bertfast-triton", "bertfast-cudagraphs"),
           graph_shapes=((1, 128), (8, 128), (32, 128), (64, 512)), test_paths=("tests",), layer_norm_shape="4096x768",
           threads=None)
DRY_RUN = Mode(name="dry-run", device="cpu", model=None, seq=16, latency_batch=1, throughput_batch=2, mixed_batch=2,
               warmup=0, repeats=1, max_time_s=0.5, copy_bytes=2**22, matmul_size=128, half_dtype="float32",
               bertfast=("bertfast-torch",), graph_shapes=((1, 16), (2, 16)),
               test_paths=("tests/kernels/test_layer_norm.py",), layer_norm_shape="64x96", threads=1)
# The dry run's "half" is float32: a CPU without fp16 arithmetic takes seconds per float16 matmul (the runner's
# matmul peak alone would take half a minute); bertfast's GPU providers are stood in for by its torch ops; and
# one thread per process, since its figures mean nothing and the CI machine is shared.
# The dry run's model: tests/helpers.py's TINY, so mixed lengths stay within 16-64 tokens; its config.json is
# written to DRY_CONFIG_DIR in the scratch folder (the runner gives it random weights).
DRY_CONFIG = dict(model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)
DRY_CONFIG_DIR = "dry-config"
# The ModernBERT workload's model by mode (random weights): answerdotai/ModernBERT-base's shapes on the device; on
# the dry run a tiny one whose window (8 keys either side) the dry run's 16-token and mixed workloads cross.
MODERNBERT_CONFIGS = {
    "gpu": dict(model_type="modernbert", vocab_size=50368, hidden_size=768, intermediate_size=1152,
                num_hidden_layers=22, num_attention_heads=12, max_position_embeddings=8192, pad_token_id=50283,
                global_attn_every_n_layers=3, local_attention=128),
    "dry-run": dict(model_type="modernbert", vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                    num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                    eos_token_id=2, cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=2,
                    local_attention=16)}

BASELINE = "transformers-eager"  # bertfast.bench.cases.BASELINE: every "vs eager" ratio is against it
CPU_COMPILE = "torch.compile takes about a minute per shape on a CPU; it is timed on the device only"


@dataclass(frozen=True)
class Step:
    """One step of the check. ``gpu_s`` are guesses for a bare H100/H200 (no GPU number existed when they were
    written: correct them from a run's results.json); ``dry_s`` were measured on the 2-core CI machine."""

    name: str
    kind: str  # how it runs: "machine" (in this process), "pytest-tests", "pytest-kernels", or a steps.py function
    what: str  # one line for the summary
    gpu_s: float  # expected seconds on the device: started only when this much budget is left
    dry_s: float  # expected seconds in the dry run
    cap_s: float  # the step's process is killed after this (or when the budget runs out, if sooner)
    dtype: str = ""  # bench steps: the dtype ("half": the mode's half_dtype)
    providers: tuple[str, ...] = ()  # bench steps: the providers measured (the BASELINE is always timed too)
    with_bertfast: bool = False  # bench steps: also the mode's bertfast providers
    dry_skip: str | None = None  # why the dry run skips it; None: it runs there too
    model: str = ""  # bench steps: "modernbert" = MODERNBERT_CONFIGS' model of the mode; "": the mode's model

    def bench_providers(self, mode: Mode) -> list[str]:
        """The runner's providers for a bench step: what it measures, then the BASELINE."""
        return [*(mode.bertfast if self.with_bertfast else ()), *self.providers, BASELINE]

    def expected_s(self, mode: Mode) -> float:
        return self.dry_s if mode.name == DRY_RUN.name else self.gpu_s


# In order of importance, which is the order they run in: the machine and its ceilings (every ratio needs
# them), then what the README's GPU targets need, then the correctness tests, then diagnostics and the slowest
# peers. When the budget runs short, the steps at the end are cut first.
STEPS = (
    Step("machine", "machine", "GPU, driver, clocks (nvidia-smi), package versions, git commit", 1, 1, 30),
    Step("ceilings", "ceilings", "torch / CUDA versions, device properties, which bench providers can run; "
         "copy bandwidth, fp16 and bf16 matmul peak", 15, 4, 60),
    Step("bench-float16", "bench", "bertfast bench, float16: bertfast Triton and CUDA graphs vs transformers "
         "eager and SDPA", 75, 12, 180, dtype="half", providers=("transformers-sdpa",),
         with_bertfast=True),
    Step("cold-start", "cold_start", "a fresh process: import -> first result at the latency workload "
         "(empty Triton cache: compilation included)", 30, 8, 90),
    Step("kernels", "pytest-kernels", "benchmarks/bench_kernels.py --benchmark-enable: LayerNorm, bias+GELU, "
         "attention, varlen attention, dense+GELU GEMM, ModernBERT's rotary, GeGLU, windowed attention", 120, 14, 240),
    Step("bench-bfloat16", "bench", "bertfast bench, bfloat16: the same providers", 60, 10, 150,
         dtype="bfloat16", providers=("transformers-sdpa",), with_bertfast=True),
    Step("bench-modernbert", "bench", "bertfast bench on ModernBERT-base shapes (rotary, GeGLU, sliding-window "
         "layers; random weights), half precision: bertfast Triton and CUDA graphs vs transformers eager and SDPA",
         75, 12, 180, dtype="half", providers=("transformers-sdpa",), with_bertfast=True, model="modernbert"),
    Step("tests", "pytest-tests", "python -m pytest -m cuda: the needs_cuda tests (half-precision parity, "
         "fill-mask, CUDA graph capture, every kernel)", 120, 8, 180),
    Step("graphs", "graphs", "CUDA-graph capture time and memory per bucket", 30, 0, 90,
         dry_skip="CUDA graphs need a GPU"),
    Step("onnxruntime", "bench", "onnxruntime-gpu (plain and optimised export), float16, when installed", 90, 0, 150,
         dtype="half", providers=("onnxruntime", "onnxruntime-optimized"),
         dry_skip="onnxruntime-gpu runs on the device; `bertfast bench` times onnxruntime on a CPU"),
    Step("compile-float16", "bench", "torch.compile of transformers (default mode), float16", 110, 0, 180,
         dtype="half", providers=("transformers-compile",), dry_skip=CPU_COMPILE),
    Step("compile-bfloat16", "bench", "torch.compile of transformers (default mode), bfloat16", 110, 0, 180,
         dtype="bfloat16", providers=("transformers-compile",), dry_skip=CPU_COMPILE),
)
# the bench steps with a model of their own (ModernBERT's): reported beside the mode's tables, never read by targets
OWN_MODEL_STEPS = frozenset(step.name for step in STEPS if step.model)


class Budget:
    """``--budget-s`` seconds from now, less RESERVE_S for the files. Steps are offered in order of importance:
    one starts only when the time left covers what it is expected to take, and runs at most until the budget
    ends (or its cap), so the work cut is at the end of the order: the least important (a short step may still
    run after a longer one was cut)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        if not seconds > 0:
            raise ValueError(f"--budget-s must be positive, got {seconds}")
        self.seconds = seconds
        self.clock = clock
        self.deadline = clock() + seconds - RESERVE_S

    def left(self) -> float:
        return self.deadline - self.clock()

    def admit(self, step: Step, mode: Mode) -> tuple[float | None, str | None]:
        """(timeout in seconds, None) to run ``step``; (None, the reason) to cut it."""
        left, need = self.left(), step.expected_s(mode)
        if left < need:
            return None, (f"cut to stay inside --budget-s {self.seconds:g}: {max(left, 0.0):.0f} s left, "
                          f"it needs about {need:.0f} s")
        return min(step.cap_s, left), None
