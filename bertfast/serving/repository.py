"""Model repositories for NVIDIA Triton Inference Server: an ONNX export on the onnxruntime backend, or a
checkpoint served by bertfast itself on the Python backend.

onnxruntime (``backend="onnxruntime"``): ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.onnx``. The
config is derived from the graph itself: platform ``onnxruntime_onnx``, ``max_batch_size`` (the batch axis is
then implicit, so the int64 inputs have ``dims: [ -1 ]``), the outputs with their non-batch dims (-1 where
dynamic), dynamic batching with a queue delay, and one instance group on the GPU or the CPU. An export of a
sentence-transformers folder (``bertfast.export.sentence``) returns token vectors or MLM logits, not the folder's
embedding: its config gets parameters that say each remaining step and setting (``client_steps`` and the
``sentence_transformers.*`` settings: truncation length, lower-casing, prompts, pooling, Dense layers,
normalisation or SPLADE pooling), and version 1 also holds the export's config.json, tokenizer and
sentence-transformers files (the Dense weights among them), so it is itself an export folder that
``bertfast.pipeline(..., backend="onnxruntime")`` runs.

Python (``backend="python"``): ``REPO/<name>/config.pbtxt``, ``REPO/<name>/1/model.py`` (which imports
``bertfast.serving.backend.TritonPythonModel``: bertfast must be installed where Triton runs) and, for a local
checkpoint, a copy of it in ``REPO/<name>/1/checkpoint``. The inputs and outputs are the task's text contract
(``bertfast.serving.contract``); the model, task, dtype, device and token budget are the config's parameters,
with a line of documentation per tensor, so ``tritonclient``'s model config calls describe the contract.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Callable

import torch

from bertfast.atomic import replacing_directory
from bertfast.checkpoint import CheckpointError
from bertfast.config import BertConfig, resolve_dtype
from bertfast.models.registry import read_config
from bertfast.export.onnx import WRITTEN_FILES, check_out_dir
from bertfast.export.onnx_model import ONNX_FILE, resolve_onnx_path
from bertfast.export.sentence import client_parameters, sentence_files
from bertfast.hub import resolve_file
from bertfast.cpu.int8 import check_quantize
from bertfast.serving.batching import ServedModel
from bertfast.serving.contract import contract_for

INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
TRITON_FILES = ("config.pbtxt", "1")  # what a model directory receives (version 1 holds model.onnx)
BACKENDS = ("onnxruntime", "python")
# ONNX TensorProto element types -> Triton data types (the types an export can have at its boundary)
TRITON_TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 10: "TYPE_FP16"}
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
CHECKPOINT_DIR = "checkpoint"  # the copied checkpoint, inside the version directory
MODEL_PY = '''"""Triton Python-backend model written by bertfast: it runs the bertfast pipeline named by this model's
config.pbtxt parameters (pip install bertfast where Triton runs)."""
from bertfast.serving.backend import TritonPythonModel  # noqa: F401
'''


def _dims(value_info: Any) -> list[int]:
    """Dims after the batch axis: -1 for a symbolic dim, its size otherwise."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]


def _tensors(kind: str, specs: list[tuple[str, str, list[int]]], optional: frozenset[str] = frozenset()) -> str:
    """``input [...]`` / ``output [...]`` from (name, Triton data type, dims) triples; the inputs named in
    ``optional`` may be left out of a request."""
    entries = [f"  {{\n    name: {json.dumps(name)}\n    data_type: {data_type}\n"
               f"    dims: [ {', '.join(map(str, dims))} ]\n" + ("    optional: true\n" if name in optional else "")
               + "  }" for name, data_type, dims in specs]
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def _onnx_tensors(kind: str, values: list) -> str:
    specs = []
    for v in values:
        elem_type = v.type.tensor_type.elem_type
        if elem_type not in TRITON_TYPES:
            raise ValueError(f"{kind} {v.name!r} has ONNX element type {elem_type}, which has no Triton type here")
        specs.append((v.name, TRITON_TYPES[elem_type], _dims(v)))
    return _tensors(kind, specs)


def _scheduling(name: str, max_batch_size: int, kind: str, instance_count: int, max_queue_delay_us: int) -> str:
    """The checked ``dynamic_batching`` and ``instance_group`` sections both backends share."""
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(f"Triton model name {name!r} must be letters, digits, '_', '.' or '-'")
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind must be one of {sorted(INSTANCE_KINDS)}, got {kind!r}")
    for label, value, low in (("max_batch_size", max_batch_size, 1), ("instance_count", instance_count, 1),
                              ("max_queue_delay_us", max_queue_delay_us, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    return (f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
            + f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {INSTANCE_KINDS[kind]}\n  }}\n]\n")


def _parameters(parameters: dict[str, str]) -> str:
    """A ``parameters`` section (string values), or nothing for none."""
    entries = [f"  {{\n    key: {json.dumps(key)}\n    value: {{ string_value: {json.dumps(value)} }}\n  }}"
               for key, value in parameters.items()]
    return "parameters [\n" + ",\n".join(entries) + "\n]\n" if entries else ""


def triton_config(onnx_path: str | os.PathLike, name: str, max_batch_size: int = 32, kind: str = "gpu",
                  instance_count: int = 1, max_queue_delay_us: int = 100) -> str:
    """The text of ``config.pbtxt`` (Triton's ModelConfig in protobuf text format) for an exported graph, with
    the client's steps as parameters when the export folder holds a sentence-transformers configuration."""
    return _onnx_config(onnx_path, name, max_batch_size, kind, instance_count, max_queue_delay_us)[0]


def _onnx_config(onnx_path: str | os.PathLike, name: str, max_batch_size: int, kind: str, instance_count: int,
                 max_queue_delay_us: int) -> tuple[str, str, dict[str, str]]:
    """(config.pbtxt's text, the export task, the client parameters in it) for an exported graph."""
    import onnx

    scheduling = _scheduling(name, max_batch_size, kind, instance_count, max_queue_delay_us)
    proto = onnx.load(os.fspath(onnx_path), load_external_data=False)
    graph = proto.graph
    for v in (*graph.input, *graph.output):
        first = v.type.tensor_type.shape.dim[0]
        if first.HasField("dim_value"):
            raise ValueError(f"{v.name!r} has a fixed first dim ({first.dim_value}); Triton's batching needs a "
                             f"dynamic batch axis: re-export with bertfast.export_onnx")
    task = {p.key: p.value for p in proto.metadata_props}.get("task", "")
    parameters = client_parameters(os.path.dirname(os.path.abspath(onnx_path)), task, [v.name for v in graph.output])
    text = (f"name: {json.dumps(name)}\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: {max_batch_size}\n"
            + _onnx_tensors("input", list(graph.input)) + _onnx_tensors("output", list(graph.output)) + scheduling
            + _parameters(parameters))
    return text, task, parameters


def python_config(config: BertConfig, task: str, name: str, parameters: dict[str, str], max_batch_size: int = 32,
                  kind: str = "cpu", instance_count: int = 1, max_queue_delay_us: int = 100) -> str:
    """The text of ``config.pbtxt`` for bertfast on the Python backend: the task's contract as the tensors,
    ``parameters`` (plus the task and one ``doc.<tensor>`` line per tensor) as the model's parameters."""
    contract = contract_for(task)
    scheduling = _scheduling(name, max_batch_size, kind, instance_count, max_queue_delay_us)
    docs = {f"doc.{spec.name}": spec.doc for spec in (*contract.inputs, *contract.outputs)}
    return (f"name: {json.dumps(name)}\nbackend: \"python\"\nmax_batch_size: {max_batch_size}\n"
            + _tensors("input", [(s.name, s.data_type, s.resolved_dims(config)) for s in contract.inputs],
                       frozenset(s.name for s in contract.inputs if s.optional))
            + _tensors("output", [(s.name, s.data_type, s.resolved_dims(config)) for s in contract.outputs])
            + scheduling + _parameters({"task": task, **parameters, **docs}))


def _write_model(model_dir: str, config: str, fill_version: Callable[[str], None]) -> None:
    """``model_dir/config.pbtxt`` and version ``1`` (filled by ``fill_version(path)``), written into a folder beside
    ``model_dir`` and swapped in: a failed write leaves the old model whole; other entries of it are kept."""
    with replacing_directory(model_dir, owned=TRITON_FILES) as new:
        version_dir = os.path.join(new, "1")
        os.makedirs(version_dir)
        fill_version(version_dir)
        with open(os.path.join(new, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config)


def write_python_repository(model: str | os.PathLike, repo_dir: str | os.PathLike, task: str, name: str | None = None,
                            max_batch_size: int = 32, kind: str | None = None, instance_count: int = 1,
                            max_queue_delay_us: int = 100, overwrite: bool = False, dtype: str = "float32",
                            device: str = "cpu", quantize: str | None = None, max_batch_tokens: int = 16384,
                            threads: int = 0, copy_checkpoint: bool = True, check_load: bool = True) -> str:
    """Write ``repo_dir/<name>/`` serving ``model`` (a checkpoint directory or hub id) for ``task`` with bertfast
    on Triton's Python backend; return that directory. ``name`` defaults to the task. A local checkpoint is
    copied into the repository unless ``copy_checkpoint=False`` (then its absolute path is recorded); a hub id is
    recorded as is and loaded through the HF cache or the hub when Triton starts the model. ``kind`` defaults
    to the GPU for a CUDA ``device``, else the CPU. ``threads``: torch threads per instance on the CPU (0: the
    cores divided by the instances). ``repo_dir/<name>`` must be new or empty unless
    ``overwrite=True``.

    Refused before anything is written: an unknown task, ``threads`` < 0, ``max_batch_tokens`` < 1, and with
    ``check_load`` for a local checkpoint whatever the served model's load refuses (it is loaded once here, on the
    CPU in float32): a checkpoint without the task's head (a base model for question-answering), or a
    ``max_batch_tokens`` below the pipeline's ``max_length`` (one text would not fit in a model call). A hub id
    is read when Triton loads it (as is every model with ``check_load=False``, what ``serve`` passes: its
    tritonserver loads the model right away and reports what refused it)."""
    contract_for(task)  # refuse an unknown task or a bad option before writing anything
    check_quantize(quantize, resolve_dtype(dtype), torch.device(device))  # the device may be another machine's
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"threads must be an int >= 0, got {threads!r}: pass --threads 0 (the default: the cores "
                         f"divided by the instances) or a positive number of torch threads per instance")
    if not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool) or max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be an int >= 1, got {max_batch_tokens!r}: pass --max-batch-tokens "
                         f"with at least the model's max_length (the real tokens of one model call)")
    name = name or task
    kind = kind or ("gpu" if str(device).startswith("cuda") else "cpu")
    source = os.fspath(model)
    local = os.path.isdir(source)
    if not local:
        recorded = source  # a hub id
    elif copy_checkpoint:
        recorded = CHECKPOINT_DIR  # relative to the version directory
    else:
        recorded = os.path.abspath(source)
    parameters = {"model": recorded, "dtype": str(dtype), "device": str(device),
                  "max_batch_tokens": str(max_batch_tokens), "threads": str(threads)}
    if quantize is not None:
        parameters["quantize"] = quantize
    config = python_config(read_config(resolve_file(source, "config.json")), task, name, parameters,
                           max_batch_size, kind, instance_count, max_queue_delay_us)
    model_dir = check_out_dir(os.path.join(os.fspath(repo_dir), name), overwrite)
    if local and check_load:  # the load Triton will run, here on the CPU in float32: what it refuses is refused now
        try:
            ServedModel.load(source, task, max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens)
        except CheckpointError as e:
            raise CheckpointError(f"--task {task}: {source} cannot be served for it: {e}") from e

    def fill_version(version_dir: str) -> None:
        if local and copy_checkpoint:
            shutil.copytree(source, os.path.join(version_dir, CHECKPOINT_DIR))
        with open(os.path.join(version_dir, "model.py"), "w", encoding="utf-8") as f:
            f.write(MODEL_PY)

    _write_model(model_dir, config, fill_version)
    return model_dir


def write_triton_repository(export: str | os.PathLike, repo_dir: str | os.PathLike, name: str | None = None,
                            max_batch_size: int = 32, kind: str | None = None, instance_count: int = 1,
                            max_queue_delay_us: int = 100, overwrite: bool = False, backend: str = "onnxruntime",
                            **python_options: Any) -> str:
    """Write a Triton model and return ``repo_dir/<name>``.

    ``backend="onnxruntime"``: ``export`` is an ONNX export (its directory or .onnx file); writes
    ``repo_dir/<name>/config.pbtxt`` and ``repo_dir/<name>/1/model.onnx``; ``name`` defaults to the export
    directory's name, ``kind`` to "gpu". ``backend="python"``: ``export`` is a checkpoint (directory or hub id)
    served by bertfast; ``python_options`` (``task`` required, ``dtype``, ``device``, ``quantize``,
    ``max_batch_tokens``, ``threads``, ``copy_checkpoint``, ``check_load``) go to ``write_python_repository``.
    ``repo_dir/<name>`` must be new or empty unless ``overwrite=True``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Triton backend {backend!r}; available: {BACKENDS}")
    if backend == "python":
        if "task" not in python_options:
            raise TypeError("backend='python' needs task= (e.g. task='feature-extraction')")
        return write_python_repository(export, repo_dir, name=name, max_batch_size=max_batch_size, kind=kind,
                                       instance_count=instance_count, max_queue_delay_us=max_queue_delay_us,
                                       overwrite=overwrite, **python_options)
    if python_options:
        raise TypeError(f"{sorted(python_options)} apply to backend='python' only")
    onnx_path = resolve_onnx_path(export)
    folder = os.path.dirname(os.path.abspath(onnx_path))
    name = name or os.path.basename(folder)
    config, task, parameters = _onnx_config(onnx_path, name, max_batch_size, kind or "gpu", instance_count,
                                            max_queue_delay_us)
    model_dir = check_out_dir(os.path.join(os.fspath(repo_dir), name), overwrite)
    # with client steps, the files they need travel too: version 1 is then an export folder of its own
    companions = [f for f in (*WRITTEN_FILES, *sentence_files(folder, task, local_files_only=True))
                  if f != ONNX_FILE and os.path.isfile(os.path.join(folder, f))] if parameters else []

    def fill_version(version_dir: str) -> None:
        shutil.copyfile(onnx_path, os.path.join(version_dir, ONNX_FILE))
        for companion in companions:
            os.makedirs(os.path.dirname(os.path.join(version_dir, companion)), exist_ok=True)
            shutil.copyfile(os.path.join(folder, companion), os.path.join(version_dir, companion))

    _write_model(model_dir, config, fill_version)
    return model_dir
