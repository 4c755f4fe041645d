"""The providers the benchmark compares: one small class each, registered by name.

A provider says whether it can run here (``available`` -> None, or the reason it is skipped), loads a
checkpoint directory (``prepare``), and maps a padded batch to ``last_hidden_state`` (``run``, the timed
call). Adding one: subclass ``Provider``, set ``name`` and ``description``, decorate with ``@register``.
With ``--task`` the runner sets ``task`` (bertfast.bench.tasks): ``prepare`` loads that task's model and ``run``
returns its output; a provider lists the tasks it measures in ``tasks``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Any, Callable, ClassVar

import torch

from bertfast.bench.options import DEFAULT_TASK, GRID_TASKS
from bertfast.bench.parity import FEATURE_EXTRACTION, load_transformers
from bertfast.bench.tasks import BenchTask
from bertfast.cpu import cpu_info
from bertfast.export.onnx import export_onnx
from bertfast.export.onnx_model import OnnxModel
from bertfast.graphs import optimize
from bertfast.ops import force_backend
from bertfast_kernels.launch import triton_installed

Batch = dict[str, torch.Tensor]
REGISTRY: dict[str, type["Provider"]] = {}


class Provider:
    name: ClassVar[str]
    description: ClassVar[str]
    slow_to_prepare: ClassVar[bool] = False  # compiles for minutes: left out of --quick unless asked for
    torch_memory: ClassVar[bool] = True  # its GPU memory goes through torch's allocator (measurable)
    tasks: ClassVar[tuple[str, ...]] = (DEFAULT_TASK,)  # the --task values it measures
    task: BenchTask = FEATURE_EXTRACTION  # what prepare loads and run returns; set by the runner for --task
    # A precision of its own ("bfloat16", "int8"): it runs in the float32 run and is checked by that precision's
    # rule (bertfast.bench.parity.check), not by float32's. None: the run's dtype.
    precision: ClassVar[str | None] = None

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """None when this provider can run with ``dtype`` on ``device`` here, else the reason it cannot (for a
        provider with a precision of its own: that precision's conditions)."""
        return None if self.precision is None else _own_precision(self, device, dtype)

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        raise NotImplementedError

    def run(self, batch: Batch) -> torch.Tensor:
        """(B, S) input_ids / attention_mask / token_type_ids on the device -> last_hidden_state (B, S, H), or the
        task's output (``task.select``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the model so its memory can be reused by the next provider (the task stays)."""
        task = self.task
        self.__dict__.clear()
        self.task = task


def register(cls: type[Provider]) -> type[Provider]:
    if cls.name in REGISTRY:
        raise ValueError(f"provider {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def _missing(module: str, install: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"{module} is not installed (pip install {install})"


def _own_precision(provider: Provider, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why a provider with its own precision cannot run in this (device, dtype) run, or None."""
    if device.type != "cpu":
        return f"a CPU mode ({provider.precision}); on the GPU use --dtype float16 / bfloat16"
    if dtype != torch.float32:
        return f"runs in {provider.precision} whatever the run's dtype: measured in the float32 run"
    if provider.precision == "bfloat16" and not cpu_info().native_bf16:
        return (f"this CPU ({cpu_info().name}) has neither avx512_bf16 nor AMX: torch emulates bf16 matmuls, several "
                f"times slower than float32 (see README, CPU modes)")
    return None


class _Bertfast(Provider):
    backend: ClassVar[str]  # forced for each call with bertfast.ops.force_backend (this thread only)
    tasks = GRID_TASKS

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        self.model = self.task.model_class.from_pretrained(model_dir, dtype=dtype, device=device,
                                                           local_files_only=True)

    def run(self, batch: Batch) -> torch.Tensor:
        with force_backend(self.backend):
            return self.task.select(self.model(**batch))


@register
class BertfastTorch(_Bertfast):
    name = "bertfast-torch"
    description = "bertfast, torch reference ops (backend forced to torch), padding-free"
    backend = "torch"


@register
class BertfastBf16(_Bertfast):
    name = "bertfast-bf16"
    description = "bertfast in bfloat16 on the CPU (fp32 accumulation, LayerNorm / softmax statistics), padding-free"
    backend = "torch"
    precision = "bfloat16"

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        super().prepare(model_dir, torch.bfloat16, device)


@register
class BertfastInt8(_Bertfast):
    name = "bertfast-int8"
    description = "bertfast quantize='int8': the encoder's linears in dynamic int8 (torch's engine), padding-free"
    backend = "torch"
    precision = "int8"

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        self.model = self.task.model_class.from_pretrained(model_dir, device=device, local_files_only=True,
                                                           quantize="int8")


@register
class BertfastTriton(_Bertfast):
    name = "bertfast-triton"
    description = "bertfast, Triton kernels (backend forced to triton), padding-free"
    backend = "triton"

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type != "cuda":
            return "Triton kernels need a GPU (the interpreter is for tests)"
        return None if triton_installed() else "Triton is not installed (pip install triton)"


@register
class BertfastCudaGraphs(Provider):
    name = "bertfast-cudagraphs"
    description = "bertfast.optimize(model, cuda_graphs=True): Triton kernels replayed from CUDA graphs"
    tasks = GRID_TASKS

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return None if device.type == "cuda" else "CUDA graphs need a GPU"

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        model = self.task.model_class.from_pretrained(model_dir, dtype=dtype, device=device, local_files_only=True)
        self.forward: Callable[..., Any] = optimize(model, cuda_graphs=True)

    def run(self, batch: Batch) -> torch.Tensor:
        return self.task.select(self.forward(**batch))


class _Transformers(Provider):
    attention: ClassVar[str]
    tasks = GRID_TASKS

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return _missing("transformers", "transformers") or super().available(device, dtype)

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        self.model = load_transformers(model_dir, dtype, device, self.attention, self.task)

    def run(self, batch: Batch) -> torch.Tensor:
        return self.task.select(self.model(**batch))


@register
class TransformersEager(_Transformers):
    name = "transformers-eager"
    description = "transformers BertModel, eager attention (the baseline of every speedup)"
    attention = "eager"


@register
class TransformersSdpa(_Transformers):
    name = "transformers-sdpa"
    description = "transformers BertModel, torch scaled_dot_product_attention"
    attention = "sdpa"


@register
class TransformersBf16(_Transformers):
    name = "transformers-bf16"
    description = "transformers BertModel in bfloat16 on the CPU, SDPA attention"
    attention = "sdpa"
    precision = "bfloat16"

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        super().prepare(model_dir, torch.bfloat16, device)


@register
class TransformersInt8(_Transformers):
    name = "transformers-int8"
    description = "transformers BertModel (SDPA) + torch.ao.quantization.quantize_dynamic(nn.Linear, qint8)"
    attention = "sdpa"
    precision = "int8"

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        import warnings

        super().prepare(model_dir, torch.float32, device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's notice that eager quantization moves to torchao
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)


@register
class TransformersCompile(_Transformers):
    name = "transformers-compile"
    description = "torch.compile of transformers BertModel (SDPA attention, inductor)"
    attention = "sdpa"
    slow_to_prepare = True

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
            return "torch.compile (inductor) on CPU needs a C++ compiler (g++)"
        if device.type == "cuda" and not triton_installed():
            return "torch.compile (inductor) on GPU needs Triton (pip install triton)"
        return super().available(device, dtype)

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        super().prepare(model_dir, dtype, device)
        self.model = torch.compile(self.model)

    def close(self) -> None:
        super().close()
        torch._dynamo.reset()  # drop the compiled graphs and their caches


class _OnnxRuntime(Provider):
    """bertfast.export_onnx's model (exported once, in ``prepare``) run by bertfast.OnnxModel, which binds the
    torch tensors in place (IO binding), so a call times the onnxruntime session."""

    optimize: ClassVar[bool]
    quantize: ClassVar[bool] = False  # the float32 export through onnxruntime's quantize_dynamic
    torch_memory = False  # onnxruntime allocates from its own arena
    tasks = GRID_TASKS

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        missing = _missing("onnxruntime", "onnxruntime-gpu" if device.type == "cuda" else "onnxruntime")
        if missing:
            return missing
        if self.precision is not None:
            return super().available(device, dtype)
        if dtype == torch.bfloat16:
            return "bertfast.export_onnx writes float32 or float16 models, not bfloat16"
        if dtype == torch.float16 and device.type != "cuda":
            return "float16 ONNX models are for the GPU; onnxruntime on CPU runs them in float32 kernels"
        if device.type == "cuda" and "CUDAExecutionProvider" not in _ort_providers():
            return "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)"
        return None

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        self.workdir = tempfile.TemporaryDirectory(prefix="bertfast-bench-onnx-")
        export_dir = os.path.join(self.workdir.name, "export")
        export_onnx(model_dir, export_dir, task=self.task.name, optimize=self.optimize,
                             fp16=dtype == torch.float16)
        if self.quantize:
            _ort_quantize_dynamic(os.path.join(export_dir, "model.onnx"))
        self.session = OnnxModel(export_dir, provider=device.type, device_id=device.index or 0,
                                          session_options=_session_options(device))

    def run(self, batch: Batch) -> torch.Tensor:
        return self.task.select(self.session(**batch))

    def close(self) -> None:
        workdir = self.__dict__.get("workdir")
        super().close()
        if workdir is not None:
            workdir.cleanup()


def _ort_quantize_dynamic(path: str) -> None:
    """The file at ``path`` replaced by onnxruntime's own int8 of it, as its documentation recommends for a
    transformer on the CPU: ``quantize_dynamic`` (QInt8 weights, one scale per channel; activations quantized per
    call). The peer, not bertfast's int8 export (bertfast-int8 is ours)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path + ".int8"
    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, per_channel=True)
    os.replace(quantized, path)


def _session_options(device: torch.device) -> Any:
    """On CPU: as many intra-op threads as torch uses, and no spin-waiting once a call returns. onnxruntime's
    threads otherwise keep spinning after each run and slow down whichever provider runs next (measured with
    --interleave at b1-s128 on the 2-core dev machine: bertfast 176 ms right after onnxruntime, 121 ms alone)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if device.type == "cpu":
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


@register
class OnnxRuntimePlain(_OnnxRuntime):
    name = "onnxruntime"
    description = "onnxruntime on bertfast.export_onnx's model"
    optimize = False


@register
class OnnxRuntimeOptimized(_OnnxRuntime):
    name = "onnxruntime-optimized"
    description = "onnxruntime on the export passed through onnxruntime's transformers optimizer"
    optimize = True


@register
class OnnxRuntimeInt8(_OnnxRuntime):
    name = "onnxruntime-int8"
    description = "onnxruntime on the export quantized by onnxruntime.quantization.quantize_dynamic (int8, per channel)"
    optimize = False
    quantize = True
    precision = "int8"


@register
class OpenVino(_OnnxRuntime):
    """OpenVINO's CPU plugin compiling bertfast.export_onnx's float32 file (inference precision pinned to f32, so
    that it does not switch to bf16 on a CPU that has it)."""

    name = "openvino"
    description = "OpenVINO (CPU plugin) reading bertfast.export_onnx's float32 model, f32 inference precision"
    optimize = False

    def available(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if device.type != "cpu":
            return "the OpenVINO provider runs on the CPU"
        if dtype != torch.float32:
            return "measured in float32 (the ONNX file is float32)"
        return _missing("openvino", "openvino") or _missing("onnxruntime", "onnxruntime")

    def prepare(self, model_dir: str, dtype: torch.dtype, device: torch.device) -> None:
        import openvino

        self.workdir = tempfile.TemporaryDirectory(prefix="bertfast-bench-openvino-")
        export_dir = os.path.join(self.workdir.name, "export")
        report = export_onnx(model_dir, export_dir, task=self.task.name)
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = openvino.Core().compile_model(report.path, "CPU", config)
        self.names = report.outputs

    def run(self, batch: Batch) -> torch.Tensor:
        results = self.compiled({k: v.numpy() for k, v in batch.items()})
        outputs = {name: torch.from_numpy(results[self.compiled.output(name)]) for name in self.names}
        return self.task.select(_Outputs(outputs))


class _Outputs:
    """Output tensors by name, read as attributes (what ``task.select`` takes)."""

    def __init__(self, outputs: dict[str, torch.Tensor]):
        self.__dict__.update(outputs)
