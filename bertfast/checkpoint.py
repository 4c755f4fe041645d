"""Checkpoint reading, whatever the architecture.

Formats: ``model.safetensors``, sharded ``model.safetensors.index.json``, ``pytorch_model.bin`` (read with
``weights_only=True``) and its sharded index, and the checks on the values a model takes. Renaming the keys is
each architecture's pure ``remap_state_dict`` (``bertfast.models``); checking the result against a model and
assigning it is the model's job (``BertPreTrainedModel._load_state``).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bertfast.hub import resolve_file

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: missing or unexpected weights, wrong shapes, corrupt file."""


# What torch's unpickler raises on a damaged .bin file (read on the CPU, so none of these is about a device).
_UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError,
                      AttributeError, struct.error)
# torch's message when weights_only=True refuses a pickled object that is not a tensor or a plain container.
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


def _corrupt(path: str, error: Exception) -> CheckpointError:
    return CheckpointError(f"cannot read checkpoint file {path}: {type(error).__name__}: {error} (truncated or "
                           f"corrupt? re-download it)")


def check_readable(path: str) -> None:
    """Open and close ``path``, so that an access error surfaces as itself (a PermissionError naming the file):
    safetensors reports every failure to open a file as a FileNotFoundError."""
    with open(path, "rb"):
        pass


def _read_cpu(path: str) -> object:
    """A weight file's contents, read on the CPU: any error here is the file's."""
    if path.endswith(".safetensors"):
        check_readable(path)
        try:
            return load_file(path)
        except SafetensorError as e:
            raise _corrupt(path, e) from e
    with open(path, "rb") as f:  # an access error (permission, a folder) surfaces here, as itself
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if _WEIGHTS_ONLY_REFUSAL not in str(e):
                raise _corrupt(path, e) from e
            refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
            example = f" (e.g. {refused[1]})" if refused else ""
            raise CheckpointError(
                f"{path} holds pickled objects that are not plain tensors{example}, so it was refused for safety: "
                f"unpickling them could run code from the file. If you trust the file and where it came from, "
                f"convert it to model.safetensors once (e.g. transformers' save_pretrained, which writes "
                f"safetensors) and load that") from None
        except (*_UNPICKLING_ERRORS, OSError) as e:  # the file is open: an OSError now is about its content
            raise _corrupt(path, e) from e


def _load_one(path: str, device: torch.device | str) -> dict[str, torch.Tensor]:
    """A weight file's tensors by name, read on the CPU, then moved to ``device`` (a device error is not the file's)."""
    state = _read_cpu(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} does not hold a state dict (tensor names -> tensors), it holds a "
                              f"{type(state).__name__}: is it a checkpoint saved with torch.save(model.state_dict())?")
    if torch.device(device).type == "cpu":
        return state
    return {name: state.pop(name).to(device) for name in list(state)}  # one tensor at a time on the host


def is_inside(shard: str) -> bool:
    """A shard name from an index that stays inside the checkpoint folder: relative (no leading separator, no
    drive), no ``..`` component."""
    parts = re.split(r"[\\/]", shard)
    return parts[0] != "" and ":" not in shard and ".." not in parts


def read_weight_map(path: str) -> dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file) of a sharded index, checked: every shard inside the folder."""
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a JSON index of shards ({e}); re-download it") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{path} has no usable 'weight_map' field (a non-empty object mapping tensor names to "
                              f"shard file names); re-download it")
    outside = sorted({shard for shard in weight_map.values() if not is_inside(shard)})
    if outside:
        raise CheckpointError(f"{path} lists shards outside the checkpoint folder ({', '.join(outside)}): refused; "
                              f"an index may only name files inside its own folder")
    return weight_map


def read_state_dict(name_or_path: str | os.PathLike, device: torch.device | str = "cpu",
                    local_files_only: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint (single file or shards), with the checkpoint's own key names."""
    for filename in WEIGHT_FILES:
        path = resolve_file(name_or_path, filename, required=False, local_files_only=local_files_only)
        if path is None:
            continue
        if not filename.endswith(".index.json"):
            return _load_one(path, device)
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(read_weight_map(path).values())):
            shard_path = resolve_file(name_or_path, shard, required=False, local_files_only=local_files_only)
            if shard_path is None:
                raise CheckpointError(f"{path} lists the shard {shard}, which is not in the checkpoint; re-download it")
            state.update(_load_one(shard_path, device))
        return state
    raise FileNotFoundError(f"no weights found for {os.fspath(name_or_path)!r}: looked for {', '.join(WEIGHT_FILES)}")


def check_weight_values(state: dict[str, torch.Tensor], origin: dict[str, str], where: str) -> None:
    """Every tensor of ``state`` (the weights a model is about to take) floating point and finite: an integer
    tensor or a NaN / infinity is a damaged checkpoint, refused naming the tensor (its checkpoint name, ``origin``)
    instead of giving NaN outputs. One pass over each tensor (``isfinite().all()``)."""
    integral = [f"{origin[k]} ({t.dtype})" for k, t in state.items() if not t.is_floating_point()]
    if integral:
        raise CheckpointError(f"{where}: checkpoint weights are not floating point: {', '.join(integral[:5])}"
                              f"{' ...' if len(integral) > 5 else ''}. BERT weights are float32, float16 or bfloat16: "
                              f"is the file damaged, or quantized by another tool? Re-save it in floating point")
    broken = [origin[k] for k, t in state.items() if not bool(t.isfinite().all())]
    if broken:
        raise CheckpointError(f"{where}: checkpoint weights hold NaN or infinite values: {', '.join(broken[:5])}"
                              f"{' ...' if len(broken) > 5 else ''}. The checkpoint is damaged (or was saved from a "
                              f"diverged training run): load an intact or earlier checkpoint")
