"""PEFT LoRA adapters, merged into a checkpoint's weights at load (``from_pretrained(..., adapter=...)``), so
inference costs nothing extra: each adapted Linear weight becomes W + scaling * B @ A, as
``PeftModel.merge_and_unload()`` computes it, without peft.

An adapter folder (local or hub id) holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or
``adapter_model.bin``, read with ``weights_only=True``). Understood: LoRA on Linear layers (``r``, ``lora_alpha``,
``alpha_pattern``, ``rank_pattern``, ``use_rslora``, ``lora_bias``), the biases trained with ``bias="all"`` /
``"lora_only"``, and ``modules_to_save`` (e.g. a trained ``classifier``, which may be absent from the base
checkpoint). The merge runs on the checkpoint's own key names, before they are checked and assigned, so it
lands in transformers' query/key/value before bertfast fuses them. Anything else (DoRA, other PEFT types,
LoRA on embeddings, weights the checkpoint lacks or of other shapes) is an ``AdapterError`` naming it.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file

from bertfast.checkpoint import CheckpointError, check_readable
from bertfast.hub import read_json_object, resolve_file
from bertfast.models.registry import get_architecture

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the transformers model
# adapter_config.json options that change what the adapter computes beyond W + scaling * B @ A
UNMERGEABLE_OPTIONS = {"use_dora": "DoRA (use_dora)", "use_qalora": "QA-LoRA (use_qalora)",
                       "use_bdlora": "block-diagonal LoRA (use_bdlora)", "layer_replication": "layer_replication",
                       "target_parameters": "LoRA on bare parameters (target_parameters)",
                       "trainable_token_indices": "trainable tokens (trainable_token_indices)",
                       "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
                       "arrow_config": "Arrow routing (arrow_config)", "kasa_config": "KaSA (kasa_config)",
                       "monteclora_config": "MonteCLoRA (monteclora_config)",
                       "velora_config": "VeLoRA (velora_config)"}
# <module>.lora_A.weight, <module>.lora_B.weight / .bias, optionally with the adapter's name before the kind
LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.(?P<kind>weight|bias)")
MODULES_TO_SAVE = re.compile(r"\.modules_to_save\.[^.]+\.")  # the trained copy of a module in modules_to_save
TIED_DECODER = "cls.predictions.decoder"  # its weight is the word embedding matrix


class AdapterError(CheckpointError):
    """An adapter that cannot be merged into this checkpoint: another PEFT method, an unmergeable option, or
    weights that do not fit the checkpoint."""


@dataclass
class LoraAdapter:
    """A LoRA adapter's tensors, under transformers' key names (the PEFT prefix and wrappers removed)."""

    config: dict  # adapter_config.json
    lora: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # module -> A (r, in), B (out, r), B.bias
    replaced: dict[str, torch.Tensor] = field(default_factory=dict)  # weight key -> trained tensor (biases, modules)

    def scaling(self, module: str) -> float:
        """alpha / r (alpha / sqrt(r) with use_rslora) for one adapted module, r being its A's row count."""
        rank = self.lora[module]["A"].shape[0]
        alpha = self.config.get("lora_alpha", 8)
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.fullmatch(rf"(?:.*\.)?(?:{pattern})", module):
                alpha = value
                break
        return alpha / math.sqrt(rank) if self.config.get("use_rslora") else alpha / rank

    def saves_module_of(self, key: str) -> bool:
        """Whether ``key`` belongs to a module listed in ``modules_to_save`` (matched by suffix, as peft does)."""
        parts = key.split(".")[:-1]
        modules = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        names = self.config.get("modules_to_save") or []
        return any(m == name or m.endswith("." + name) for m in modules for name in names)


def _check_config(config: dict, where: str) -> None:
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{where} is a {config.get('peft_type')!r} adapter; bertfast merges LoRA adapters only")
    used = [label for option, label in UNMERGEABLE_OPTIONS.items() if config.get(option)]
    if used:
        raise AdapterError(f"{where} uses {', '.join(used)}, which bertfast cannot merge into plain weights; merge it "
                           f"with peft (merge_and_unload) and save the result, or train a plain LoRA adapter")
    if config.get("fan_in_fan_out"):
        warnings.warn(f"{where}: fan_in_fan_out=True is for Conv1D layers (GPT-2); BERT's Linear layers store "
                      f"(out, in) weights, so it is ignored, as peft does")


def _check_ranks(config: dict, path: str) -> None:
    """r (and rank_pattern's ranks) positive integers, lora_alpha (and alpha_pattern's) finite numbers: the scaling
    is alpha / r."""
    for key in ("rank_pattern", "alpha_pattern"):
        if not isinstance(config.get(key) or {}, dict):
            raise AdapterError(f"{path}: {key} must be an object (module name pattern -> value), got "
                               f"{config[key]!r}")
    ranks = {"r": config.get("r"), **{f"rank_pattern[{k!r}]": v for k, v in (config.get("rank_pattern") or {}).items()}}
    for name, value in ranks.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise AdapterError(f"{path}: {name} must be a positive integer (the LoRA rank), got {value!r}")
    alphas = {"lora_alpha": config.get("lora_alpha", 8),
              **{f"alpha_pattern[{k!r}]": v for k, v in (config.get("alpha_pattern") or {}).items()}}
    for name, value in alphas.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AdapterError(f"{path}: {name} must be a finite number, got {value!r}")


def _read_weights(name_or_path: str | os.PathLike, local_files_only: bool) -> dict[str, torch.Tensor]:
    for filename in ADAPTER_WEIGHTS:
        path = resolve_file(name_or_path, filename, required=False, local_files_only=local_files_only)
        if path is not None:
            check_readable(path)
            try:
                return load_file(path) if filename.endswith(".safetensors") else torch.load(
                    path, map_location="cpu", weights_only=True)
            except Exception as e:  # safetensors and torch raise several types for a corrupt file
                raise AdapterError(f"cannot read adapter weights {path}: {e}") from e
    raise FileNotFoundError(f"no adapter weights for {os.fspath(name_or_path)!r}: looked for "
                            f"{', '.join(ADAPTER_WEIGHTS)}")


def read_adapter(name_or_path: str | os.PathLike, local_files_only: bool = False) -> LoraAdapter:
    """Read a PEFT LoRA adapter folder (local directory or hub id) and check that bertfast can merge it."""
    where = f"the adapter {os.fspath(name_or_path)!r}"
    path = resolve_file(name_or_path, ADAPTER_CONFIG, local_files_only=local_files_only)
    config = read_json_object(path, "re-download the adapter or fix the file", AdapterError)
    _check_config(config, where)
    _check_ranks(config, path)
    adapter = LoraAdapter(config)
    saved_copies = {}
    for original, tensor in _read_weights(name_or_path, local_files_only).items():
        key = original.removeprefix(PEFT_PREFIX)
        if ".original_module." in key:  # the untouched module beside a modules_to_save copy
            continue
        match = LORA_KEY.fullmatch(key)
        if match:
            part = match["part"] + (".bias" if match["kind"] == "bias" else "")
            adapter.lora.setdefault(match["module"], {})[part] = tensor
        elif "lora_" in key:
            raise AdapterError(f"{where}: weight {original} is not LoRA on a Linear layer (e.g. LoRA on an embedding "
                               f"or DoRA), which bertfast cannot merge")
        elif MODULES_TO_SAVE.search(key):
            saved_copies[MODULES_TO_SAVE.sub(".", key)] = tensor
        else:
            adapter.replaced[key.replace(".base_layer.", ".")] = tensor
    for key, tensor in saved_copies.items():  # the plain name wins where both were saved
        adapter.replaced.setdefault(key, tensor)
    for module, parts in adapter.lora.items():
        if "A" not in parts or "B" not in parts:
            raise AdapterError(f"{where}: {module} has lora_{'A' if 'A' not in parts else 'B'} missing")
        if parts["A"].ndim != 2 or parts["B"].ndim != 2:
            raise AdapterError(f"{where}: {module} has lora_A {tuple(parts['A'].shape)} and lora_B "
                               f"{tuple(parts['B'].shape)}; LoRA's A and B are matrices (2-D)")
        rank = parts["A"].shape[0]
        if rank == 0:
            raise AdapterError(f"{where}: {module} has lora_A {tuple(parts['A'].shape)}, of rank 0: a LoRA update "
                               f"needs rank r >= 1; re-train or re-save the adapter")
        if parts["B"].shape[1] != rank or (config.get("r") not in (None, rank) and not config.get("rank_pattern")):
            raise AdapterError(f"{where}: {module} has lora_A {tuple(parts['A'].shape)} and lora_B "
                               f"{tuple(parts['B'].shape)}, not of the rank r={config.get('r')} of its config")
        if module.removeprefix("bert.") == TIED_DECODER:
            raise AdapterError(f"{where} adapts {module}, whose weight is tied to the word embeddings; bertfast "
                               f"cannot merge it")
    if not adapter.lora and not adapter.replaced:
        raise AdapterError(f"{where} holds no weights")
    return adapter


def merge_adapter(state: dict[str, torch.Tensor], name_or_path: str | os.PathLike, local_files_only: bool = False,
                  model_type: str = "bert") -> dict[str, torch.Tensor]:
    """A checkpoint's state dict (its own key names) with a LoRA adapter merged in; ``state`` is not modified.

    Keys are matched under the architecture's own names (its ``checkpoint_key``: for BERT with or without the
    ``bert.`` prefix), so an adapter trained on a BertModel fits the encoder of a BertForMaskedLM checkpoint and
    the other way round."""
    checkpoint_key = get_architecture(model_type).checkpoint_key
    adapter = read_adapter(name_or_path, local_files_only)
    where = f"the adapter {os.fspath(name_or_path)!r} (base model {adapter.config.get('base_model_name_or_path')!r})"
    merged = dict(state)
    names = {checkpoint_key(key): key for key in state}  # normalised name -> checkpoint key

    def target(key: str, shape: torch.Size | None, new_ok: bool = False) -> str:
        found = names.get(checkpoint_key(key))
        if found is None and new_ok:
            return key
        if found is None:
            raise AdapterError(f"{where} changes {key}, which this checkpoint does not have: is the adapter for "
                               f"this model?")
        if shape is not None and merged[found].shape != shape:
            raise AdapterError(f"{where}: {key} is {tuple(shape)} in the adapter but {tuple(merged[found].shape)} in "
                               f"the checkpoint: is the adapter for this model?")
        return found

    for key, tensor in adapter.replaced.items():
        found = target(key, tensor.shape, new_ok=adapter.saves_module_of(key))
        reference = merged.get(found, next(v for v in state.values() if v.is_floating_point()))  # dtype, device
        merged[found] = tensor.to(reference)
    for module, parts in adapter.lora.items():
        a, b = parts["A"], parts["B"]  # (r, in), (out, r)
        found = target(f"{module}.weight", torch.Size((b.shape[0], a.shape[1])))
        weight, scaling = merged[found], adapter.scaling(module)
        delta = b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)  # (out, in)
        merged[found] = (weight.float() + scaling * delta).to(weight.dtype)
        if "B.bias" in parts:  # lora_bias: B has a bias, scaled like B
            bias_key = target(f"{module}.bias", parts["B.bias"].shape)
            bias = merged[bias_key]
            merged[bias_key] = (bias.float() + scaling * parts["B.bias"].to(bias.device, torch.float32)).to(bias.dtype)
    return merged
