"""Checkpoint reading and the one pure function that maps HuggingFace key names onto ours.

Formats: ``model.safetensors``, sharded ``model.safetensors.index.json``, ``pytorch_model.bin`` (read with
``weights_only=True``) and its sharded index. ``remap_state_dict`` renames keys over a plain state dict and
knows nothing of modules; checking the result against a model and assigning it is the model's job
(``BertPreTrainedModel._load_state``).
"""
from __future__ import annotations

import json
import os
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


def _load_one(path: str, device: torch.device | str) -> dict[str, torch.Tensor]:
    try:
        if path.endswith(".safetensors"):
            return load_file(path, device=str(device))
        return torch.load(path, map_location=device, weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint file {path}: {e} (truncated or corrupt? re-download it)") from e


def read_state_dict(name_or_path: str | os.PathLike, device: torch.device | str = "cpu",
                    local_files_only: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint (single file or shards), with the checkpoint's own key names."""
    for filename in WEIGHT_FILES:
        path = resolve_file(name_or_path, filename, required=False, local_files_only=local_files_only)
        if path is None:
            continue
        if not filename.endswith(".index.json"):
            return _load_one(path, device)
        with open(path, encoding="utf-8") as f:
            weight_map: dict[str, str] = json.load(f)["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_load_one(resolve_file(name_or_path, shard, local_files_only=local_files_only), device))
        return state
    raise FileNotFoundError(f"no weights found for {os.fspath(name_or_path)!r}: looked for {', '.join(WEIGHT_FILES)}")


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
