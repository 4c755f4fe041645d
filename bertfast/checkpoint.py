"""Checkpoint reading and the one pure function that maps HuggingFace key names onto ours.

Formats: ``model.safetensors``, sharded ``model.safetensors.index.json``, ``pytorch_model.bin`` (read with
``weights_only=True``) and its sharded index. ``remap_state_dict`` renames keys over a plain state dict and
knows nothing of modules; checking the result against a model and assigning it is the model's job
(``BertPreTrainedModel._load_state``).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bertfast.hub import resolve_file

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Keys that are buffers, not weights, in some transformers versions: never loaded, never reported.
BUFFER_SUFFIXES = (".position_ids", ".token_type_ids")
# Legacy LayerNorm parameter names (the original TensorFlow-converted checkpoints) and ours.
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}
DECODER_WEIGHT = "cls.predictions.decoder.weight"
DECODER_BIAS = "cls.predictions.decoder.bias"
MLM_BIAS = "cls.predictions.bias"
# Heads beside the encoder (pretraining under cls., the task heads): never nested under bert.
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")


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


def _model_key(key: str, bert_prefix: bool) -> str:
    """One checkpoint key under our names: legacy LayerNorm names renamed, ``bert.`` added or stripped
    (heads, ``HEAD_PREFIXES``, are never nested under ``bert.``)."""
    for legacy, ours in LEGACY_SUFFIXES.items():
        if key.endswith(legacy):
            key = key[: -len(legacy)] + ours
    bare = key.removeprefix("bert.")
    return bare if bare.startswith(HEAD_PREFIXES) or not bert_prefix else "bert." + bare


def remap_state_dict(state: dict[str, torch.Tensor], *, bert_prefix: bool,
                     tie_word_embeddings: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map a checkpoint's keys onto those of a model that nests the encoder under ``bert.`` (``bert_prefix``)
    or is the encoder itself.

    - ``bert.`` is added to encoder keys (embeddings, encoder, pooler) or stripped from them; head keys
      (``cls.``, ``classifier.``, ``qa_outputs.``) stay as they are. A pooler is carried like any encoder weight
      when the checkpoint has one.
    - legacy ``LayerNorm.gamma`` / ``LayerNorm.beta`` become ``weight`` / ``bias``.
    - buffers (``*.position_ids``, ``*.token_type_ids``) are dropped.
    - ``cls.predictions.decoder.bias`` becomes ``cls.predictions.bias`` (which wins when both are present).
    - with ``tie_word_embeddings`` the decoder weight is dropped: the word embeddings are used, with a
      warning when the checkpoint's decoder differs from them.

    Returns the renamed state (the same tensors, no copies; ``state`` is not modified) and ``origin``, each
    new key's name in the checkpoint, for error messages.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for original, tensor in state.items():
        key = _model_key(original, bert_prefix)
        if key.endswith(BUFFER_SUFFIXES):
            continue
        out[key] = tensor
        origin[key] = original
    if DECODER_BIAS in out:
        bias, source = out.pop(DECODER_BIAS), origin.pop(DECODER_BIAS)
        if MLM_BIAS not in out:
            out[MLM_BIAS], origin[MLM_BIAS] = bias, source
    if tie_word_embeddings and DECODER_WEIGHT in out:
        tied = out.pop(DECODER_WEIGHT)
        del origin[DECODER_WEIGHT]
        embedding = out.get(("bert." if bert_prefix else "") + "embeddings.word_embeddings.weight")
        if embedding is not None and (tied.shape != embedding.shape or not torch.equal(tied, embedding)):
            warnings.warn("the checkpoint's cls.predictions.decoder.weight differs from the word embeddings but "
                          "config.tie_word_embeddings is true: the word embeddings are used (as transformers does)")
    return out, origin
