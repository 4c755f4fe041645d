"""A model repository for NVIDIA Triton Inference Server (onnxruntime backend) from an export.

Layout: ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.onnx`` (version 1). The config is derived from
the graph itself: platform ``onnxruntime_onnx``, ``max_batch_size`` (the batch axis is then implicit, so the
int64 inputs have ``dims: [ -1 ]``), the outputs with their non-batch dims (-1 where dynamic), dynamic
batching with a queue delay, and one instance group on the GPU or the CPU.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from bertfast.atomic import replacing_directory
from bertfast.export.onnx import check_out_dir
from bertfast.export.onnx_model import ONNX_FILE, resolve_onnx_path

INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
TRITON_FILES = ("config.pbtxt", "1")  # what a model directory receives (version 1 holds model.onnx)
# ONNX TensorProto element types -> Triton data types (the types an export can have at its boundary)
TRITON_TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 10: "TYPE_FP16"}
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _dims(value_info: Any) -> list[int]:
    """Dims after the batch axis: -1 for a symbolic dim, its size otherwise."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]


def _tensors(kind: str, values: list) -> str:
    entries = []
    for v in values:
        elem_type = v.type.tensor_type.elem_type
        if elem_type not in TRITON_TYPES:
            raise ValueError(f"{kind} {v.name!r} has ONNX element type {elem_type}, which has no Triton type here")
        dims = ", ".join(str(d) for d in _dims(v))
        entries.append(f"  {{\n    name: {json.dumps(v.name)}\n    data_type: {TRITON_TYPES[elem_type]}\n"
                       f"    dims: [ {dims} ]\n  }}")
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def triton_config(onnx_path: str | os.PathLike, name: str, max_batch_size: int = 32, kind: str = "gpu",
                  instance_count: int = 1, max_queue_delay_us: int = 100) -> str:
    """The text of ``config.pbtxt`` (Triton's ModelConfig in protobuf text format) for an exported graph."""
    import onnx

    if not MODEL_NAME.fullmatch(name):
        raise ValueError(f"Triton model name {name!r} must be letters, digits, '_', '.' or '-'")
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind must be one of {sorted(INSTANCE_KINDS)}, got {kind!r}")
    for label, value, low in (("max_batch_size", max_batch_size, 1), ("instance_count", instance_count, 1),
                              ("max_queue_delay_us", max_queue_delay_us, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    graph = onnx.load(os.fspath(onnx_path), load_external_data=False).graph
    for v in (*graph.input, *graph.output):
        first = v.type.tensor_type.shape.dim[0]
        if first.HasField("dim_value"):
            raise ValueError(f"{v.name!r} has a fixed first dim ({first.dim_value}); Triton's batching needs a "
                             f"dynamic batch axis: re-export with bertfast.export_onnx")
    return (f"name: {json.dumps(name)}\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: {max_batch_size}\n"
            + _tensors("input", list(graph.input)) + _tensors("output", list(graph.output))
            + f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
            + f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {INSTANCE_KINDS[kind]}\n  }}\n]\n")


def write_triton_repository(export: str | os.PathLike, repo_dir: str | os.PathLike, name: str | None = None,
                            max_batch_size: int = 32, kind: str = "gpu", instance_count: int = 1,
                            max_queue_delay_us: int = 100, overwrite: bool = False) -> str:
    """Write ``repo_dir/<name>/config.pbtxt`` and ``repo_dir/<name>/1/model.onnx`` for an export (its
    directory or .onnx file) and return ``repo_dir/<name>``. ``name`` defaults to the export directory's name.
    ``repo_dir/<name>`` must be new or empty unless ``overwrite=True`` (which replaces config.pbtxt and version 1,
    all at once, and keeps anything else there)."""
    onnx_path = resolve_onnx_path(export)
    name = name or os.path.basename(os.path.dirname(os.path.abspath(onnx_path)))
    config = triton_config(onnx_path, name, max_batch_size, kind, instance_count, max_queue_delay_us)
    model_dir = check_out_dir(os.path.join(os.fspath(repo_dir), name), overwrite)
    with replacing_directory(model_dir, owned=TRITON_FILES) as new:  # a failed write leaves the old model whole
        os.makedirs(os.path.join(new, "1"))
        with open(os.path.join(new, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config)
        shutil.copyfile(onnx_path, os.path.join(new, "1", ONNX_FILE))
    return model_dir
