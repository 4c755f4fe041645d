"""The contract of an exported graph (inputs, outputs per task, metadata) and ``OnnxModel``, which runs one.

Every export takes ``input_ids``, ``attention_mask`` and ``token_type_ids``, int64 (batch_size,
sequence_length) — (batch_size, num_choices, sequence_length) for multiple-choice — and returns float32
outputs named as optimum names them. ``OnnxModel`` calls such a file
like the torch model (same keyword inputs, same output dataclasses), so the pipelines run on either.
onnxruntime is imported only when an ``OnnxModel`` is built.
"""
from __future__ import annotations

import json
import os
from typing import Any

import torch

from bertfast.atomic import current_version
from bertfast.models.registry import config_from_dict
from bertfast.heads.tasks import check_choice_inputs
from bertfast.inputs import check_inputs
from bertfast.outputs import ModelOutput
from bertfast.tasks import CHOICE_INPUTS, TaskSpec, get_task, task_names

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
ONNX_FILE = "model.onnx"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# task -> its table entry, for the tasks that have an export: a lookup of bertfast.tasks
EXPORT_TASKS: dict[str, TaskSpec] = {task: get_task(task) for task in task_names("export")}


def check_task(task: str) -> TaskSpec:
    """The table entry of an export task (an alias gives its task's); a ValueError naming the export tasks."""
    return get_task(task, "export")


def resolve_onnx_path(path: str | os.PathLike) -> str:
    """An export directory (holding model.onnx) or a .onnx file -> the .onnx file; of an export a kill left
    mid-swap, the whole version's (``bertfast.atomic.current_version``)."""
    path = current_version(os.fspath(path))
    candidate = os.path.join(path, ONNX_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise FileNotFoundError(f"no ONNX model at {candidate}: pass a .onnx file or a directory written by "
                                f"bertfast.export_onnx (`bertfast export-onnx MODEL OUT_DIR`)")
    return candidate


def _providers(provider: str | None, device_id: int, available: list[str]) -> list[Any]:
    if provider is None:
        provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {sorted(PROVIDERS)} (or None to pick CUDA when available), "
                         f"got {provider!r}")
    if provider == "cuda" and PROVIDERS["cuda"] not in available:
        raise RuntimeError(f"provider='cuda' but this onnxruntime has only {available}: install onnxruntime-gpu "
                           f"(pip install onnxruntime-gpu) or use provider='cpu'")
    if provider == "cpu":
        return [PROVIDERS["cpu"]]
    return [(PROVIDERS["cuda"], {"device_id": device_id}), PROVIDERS["cpu"]]


class OnnxModel:
    """An exported bertfast model run by onnxruntime, called like the torch model.

    ``OnnxModel(path)`` takes an export directory or its ``model.onnx``. The task and the config (its class by
    model_type) come from the file's metadata (``metadata_props``), so a bare .onnx file (e.g. in a Triton repository) works.
    ``provider``: "cuda" (CUDA execution provider on GPU ``device_id``), "cpu", or None for CUDA when this
    onnxruntime has it, CPU otherwise. ``session_options`` is passed to ``onnxruntime.InferenceSession``.

    Inputs and outputs go through IO binding: inputs are read in place from the torch tensors and the outputs
    are written into preallocated torch tensors on ``device``, so timing a call measures the session only
    (for benchmarks: ``m = OnnxModel(path, provider="cuda"); m(**batch)`` with ``batch`` on ``m.device``).
    """

    def __init__(self, path: str | os.PathLike, provider: str | None = None, device_id: int = 0,
                 session_options: Any = None):
        import onnxruntime

        self.path = resolve_onnx_path(path)
        providers = _providers(provider, device_id, onnxruntime.get_available_providers())
        self.session = onnxruntime.InferenceSession(self.path, sess_options=session_options, providers=providers)
        if provider == "cuda" and PROVIDERS["cuda"] not in self.session.get_providers():
            raise RuntimeError(f"onnxruntime could not start the CUDA execution provider for {self.path} (it fell "
                               f"back to {self.session.get_providers()}); check the CUDA/cuDNN libraries that "
                               f"onnxruntime-gpu needs")
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if "task" not in self.metadata or "config" not in self.metadata:
            raise ValueError(f"{self.path} has no bertfast metadata (task, config): export it with "
                             f"bertfast.export_onnx or `bertfast export-onnx`")
        self.task = self.metadata["task"]
        self.spec = check_task(self.task)
        self.config = config_from_dict(json.loads(self.metadata["config"]), f"{self.path}'s metadata")
        on_cuda = self.session.get_providers()[0] == PROVIDERS["cuda"]
        self.device = torch.device("cuda", device_id) if on_cuda else torch.device("cpu")
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    @property
    def providers(self) -> list[str]:
        """The execution providers of the session, in priority order."""
        return self.session.get_providers()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, **unsupported: Any) -> ModelOutput:
        """input_ids (B, S) (multiple-choice: (B, num_choices, S)) -> the task's output dataclass, float32 tensors
        on ``device``.

        A missing ``attention_mask`` means no padding, a missing ``token_type_ids`` means segment 0, as in
        the torch model. Inputs are validated like the torch model's (same errors).
        """
        if unsupported:
            raise TypeError(f"an exported graph takes only {', '.join(INPUT_NAMES)}; got {sorted(unsupported)} "
                            f"as well: hidden states, attentions, positions and labels are not part of it, use the "
                            f"torch model for those")
        check = check_choice_inputs if self.spec.export.inputs == CHOICE_INPUTS else check_inputs
        check(self.config, self.device, input_ids, attention_mask, token_type_ids)
        feeds = {"input_ids": input_ids,
                 "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
                 "token_type_ids": torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids}
        feeds = {name: t.to(torch.int64).contiguous() for name, t in feeds.items()}
        outputs = {name: torch.empty(self.spec.output_dims(name, self.config, tuple(input_ids.shape)),
                                     dtype=torch.float32, device=self.device) for name in self.output_names}
        binding = self.session.io_binding()
        device_type, device_id = self.device.type, self.device.index or 0
        for name, tensor in (*feeds.items(), *outputs.items()):
            bind = binding.bind_input if name in feeds else binding.bind_output
            bind(name, device_type, device_id, _numpy_dtype(tensor), tuple(tensor.shape), tensor.data_ptr())
        if device_type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written on torch's stream are ready
        self.session.run_with_iobinding(binding)
        return self.spec.export.output_class(**outputs)

    def __repr__(self) -> str:
        return f"OnnxModel({self.path!r}, task={self.task!r}, providers={self.providers})"


def _numpy_dtype(tensor: torch.Tensor) -> Any:
    import numpy as np

    return {torch.int64: np.int64, torch.float32: np.float32}[tensor.dtype]
