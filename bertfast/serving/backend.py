"""``TritonPythonModel``: bertfast on Triton's Python backend, the class the ``model.py`` of a repository written
by ``write_triton_repository(..., backend="python")`` imports.

It runs inside the backend's stub process, which provides ``triton_python_backend_utils``: this module is
importable only there. The model, task and options come from the model config's parameters; each call gets the
requests Triton's dynamic batcher gathered and answers each one on its own (``ServedModel.infer``): a refused
request gets an INVALID_ARG error (HTTP 400), a failed model call an INTERNAL one, and the others their outputs.
"""
from __future__ import annotations

import json
import os
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from bertfast.serving.batching import RequestError, ServedModel


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        model = params["model"]
        in_repository = os.path.join(args["model_repository"], args["model_version"], model)
        device = params["device"]
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        threads = int(params.get("threads", "0"))
        instances = sum(group.get("count", 1) for group in config.get("instance_group", []))
        if torch.device(device).type == "cpu" and (threads or instances > 1):  # 0: share the cores between instances
            torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // instances))
        self.served = ServedModel.load(in_repository if os.path.isdir(in_repository) else model, params["task"],
                                       dtype=params["dtype"], device=device, quantize=params.get("quantize"),
                                       max_batch_size=config["max_batch_size"],
                                       max_batch_tokens=int(params["max_batch_tokens"]))
        self.inputs = [spec.name for spec in self.served.contract.inputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = []
        for request in requests:
            tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in self.inputs}
            batch.append({name: None if t is None else t.as_numpy() for name, t in tensors.items()})
        return [_response(result) for result in self.served.infer(batch)]


def _response(result: dict[str, Any] | Exception) -> Any:
    if isinstance(result, Exception):
        code = pb_utils.TritonError.INVALID_ARG if isinstance(result, RequestError) else pb_utils.TritonError.INTERNAL
        message = str(result) if isinstance(result, RequestError) else f"{type(result).__name__}: {result}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, array) for name, array in result.items()])
