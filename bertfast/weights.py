"""Checkpoint resolution and loading: the one place where HuggingFace key names are mapped onto ours.

Resolution: a local directory, or a hub id resolved through ``huggingface_hub`` (HF cache first;
``HF_HUB_OFFLINE=1`` honoured). Formats: ``model.safetensors``, sharded ``model.safetensors.index.json``,
``pytorch_model.bin`` (``weights_only=True``) and its sharded index. Renaming: optional ``bert.`` prefix,
legacy ``LayerNorm.gamma``/``beta``, the MLM decoder tied to the word embeddings, and the pooler or
heads of other architectures. The key set and every shape are checked before anything is assigned.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable

import huggingface_hub
import torch
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file

if TYPE_CHECKING:
    from bertfast.modeling import BertPreTrainedModel

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Keys that are buffers, not weights, in some transformers versions: never loaded, never reported.
BUFFER_SUFFIXES = (".position_ids", ".token_type_ids")
# Keys of BERT parts that a given architecture may simply not have: ignored with an info message.
OTHER_PART_PREFIXES = ("pooler.", "cls.predictions.", "cls.seq_relationship.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: missing or unexpected weights, wrong shapes, corrupt file."""


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that does not exist is a mistyped local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def resolve_file(name_or_path: str | os.PathLike, filename: str, required: bool = True,
                 local_files_only: bool = False) -> str | None:
    """Path of ``filename`` for a local directory or a hub id; None if absent and not ``required``.

    Hub ids are looked up in the HF cache first, then (unless ``local_files_only`` or
    ``HF_HUB_OFFLINE=1``) downloaded.
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise FileNotFoundError(f"{filename} not found in {name} (it holds: {sorted(os.listdir(name))})")
        return None
    if os.path.exists(name) or _looks_like_path(name):
        raise FileNotFoundError(f"{name!r} is not a directory: pass an existing local checkpoint directory or a "
                                f"hub id like 'bert-base-uncased'")
    try:
        try:
            return huggingface_hub.hf_hub_download(name, filename, local_files_only=True)
        except LocalEntryNotFoundError:
            if local_files_only:
                raise
            return huggingface_hub.hf_hub_download(name, filename)
    except LocalEntryNotFoundError as e:
        if not required:
            return None
        raise FileNotFoundError(
            f"Could not find {filename} for {name!r}: it is not a local directory, not in the HuggingFace cache, "
            f"and the hub could not be reached (offline, HF_HUB_OFFLINE=1, or no network). Download it elsewhere "
            f"(e.g. `huggingface-cli download {name}`) or pass a local directory holding config.json and "
            f"model.safetensors: from_pretrained('/path/to/{name.split('/')[-1]}')"
        ) from e
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"the hub repository {name!r} has no file {filename}") from None
        return None
    except HFValidationError as e:
        raise FileNotFoundError(f"{name!r} is neither a local directory nor a valid hub id ({e})") from None
    except OSError as e:  # repository not found, gated, HTTP errors
        raise FileNotFoundError(f"could not fetch {filename} for {name!r} from the hub: {e}") from e


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


def _rename(key: str) -> str:
    if key.endswith(".gamma"):
        return key[: -len(".gamma")] + ".weight"
    if key.endswith(".beta"):
        return key[: -len(".beta")] + ".bias"
    return key


def normalize_keys(state: dict[str, torch.Tensor], has_bert_prefix: bool,
                   tie_word_embeddings: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map checkpoint keys onto the names of a model that does (or does not) nest the encoder under ``bert.``.

    Returns the renamed state and, for error messages, each new key's name in the checkpoint.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for original, tensor in state.items():
        key = _rename(original)
        if key.endswith(BUFFER_SUFFIXES):
            continue
        bare = key[len("bert."):] if key.startswith("bert.") else key
        key = bare if bare.startswith("cls.") or not has_bert_prefix else "bert." + bare
        out[key] = tensor
        origin[key] = original
    decoder_bias = out.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None:
        out.setdefault("cls.predictions.bias", decoder_bias)
    decoder = "cls.predictions.decoder.weight"
    if tie_word_embeddings and decoder in out:
        embedding = out.get("bert.embeddings.word_embeddings.weight" if has_bert_prefix else
                            "embeddings.word_embeddings.weight")
        tied = out.pop(decoder)
        if embedding is not None and (tied.shape != embedding.shape or not torch.equal(tied, embedding)):
            warnings.warn("the checkpoint's cls.predictions.decoder.weight differs from the word embeddings but "
                          "config.tie_word_embeddings is true: the word embeddings are used (as transformers does)")
    return out, origin


def _is_other_part(key: str, has_bert_prefix: bool) -> bool:
    bare = key[len("bert."):] if has_bert_prefix and key.startswith("bert.") else key
    return bare.startswith(OTHER_PART_PREFIXES)


def load_into(model: "BertPreTrainedModel", state: dict[str, torch.Tensor], allow_missing: bool = False,
              init_missing: Callable[[torch.nn.Module], None] | None = None) -> None:
    """Check ``state`` against ``model``'s keys and shapes, then assign the tensors (no copies).

    The model may live on the meta device; with ``allow_missing``, weights absent from the checkpoint
    are materialised and initialised by ``init_missing`` with a warning, otherwise they are an error.
    """
    has_bert = hasattr(model, "bert")
    state, origin = normalize_keys(state, has_bert, model.config.tie_word_embeddings)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{origin[k]}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
                  for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k]]
    if mismatched:
        raise CheckpointError("checkpoint and config disagree on weight shapes (is config.json from the same "
                              "model?):\n  " + "\n  ".join(mismatched))
    other = [k for k in unexpected if _is_other_part(k, has_bert)]
    unknown = [origin[k] for k in unexpected if k not in other]
    if other:
        logger.info("%s: ignoring checkpoint weights of parts it does not have: %s", type(model).__name__, other)
    if unknown:
        warnings.warn(f"{type(model).__name__}: {len(unknown)} checkpoint weights were not used: {unknown}")
    if missing and not allow_missing:
        raise CheckpointError(
            f"{type(model).__name__}: the checkpoint lacks {len(missing)} weights: {missing}. It was probably saved "
            f"from another architecture (e.g. a bare BertModel). Pass allow_missing_weights=True to initialise them "
            f"randomly (the outputs that use them are then meaningless until trained)."
        )
    model.load_state_dict({k: state[k] for k in expected if k in state}, strict=False, assign=True)
    if missing:
        warnings.warn(f"{type(model).__name__}: initialised {len(missing)} weights missing from the checkpoint "
                      f"randomly: {missing}")
        _materialize_meta(model, init_missing)


def _materialize_meta(model: torch.nn.Module, init: Callable[[torch.nn.Module], None] | None) -> None:
    """Give real storage to parameters still on the meta device and initialise their modules."""
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not any(p.is_meta for p in own.values()):
            continue
        loaded = {name: p.detach().clone() for name, p in own.items() if not p.is_meta}
        for name, p in own.items():
            if p.is_meta:
                setattr(module, name, torch.nn.Parameter(torch.empty_like(p, device=device)))
        if init is not None:
            init(module)
            with torch.no_grad():  # init covers the whole module: put back what the checkpoint gave
                for name, value in loaded.items():
                    getattr(module, name).copy_(value)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """torch dtype from a dtype or a name such as "float16", "fp16", "bf16"."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names: dict[str, Any] = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
                             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
                             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]
