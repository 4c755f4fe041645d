"""LoRA fine-tuning written in PEFT's format: low-rank updates trained on a frozen model, saved as
``adapter_config.json`` + ``adapter_model.safetensors`` that ``peft.PeftModel.from_pretrained`` loads onto the
transformers model and ``from_pretrained(..., adapter=DIR)`` merges (``bertfast.adapters``).

Each adapted weight W (out, in) becomes W + alpha / r * B @ A through a ``torch.nn.utils.parametrize``
parametrization (A (r, in) initialised as peft does, B (out, r) zero, so training starts from the checkpoint's
function), because bertfast's layers read their weights directly (``F.linear(x, self.qkv.weight, ...)``). Targets
are transformers' module names matched by suffix, as peft matches ``target_modules``: ``query``, ``key`` and
``value`` are row blocks of bertfast's fused ``qkv`` (each gets its own A and B), ``dense`` (or a longer suffix
such as ``attention.output.dense``) the other Linear layers. The task head is trained whole and saved as a
``modules_to_save`` module.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from bertfast.adapters import ADAPTER_CONFIG, PEFT_PREFIX
from bertfast.models.registry import architecture_of
from bertfast.tasks import get_task

ADAPTER_FILE = "adapter_model.safetensors"
DEFAULT_TARGETS = ("query", "value")  # peft's default target_modules for BERT


@dataclass(frozen=True)
class LoraSpec:
    r: int  # rank of the update B @ A
    alpha: float  # scaling numerator: the update is alpha / r * B @ A
    targets: tuple[str, ...]  # transformers' module names (suffixes) to adapt

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """``r,alpha[,target,...]``, e.g. ``8,16,query,value`` (targets default to query,value)."""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            r, alpha = int(parts[0]), float(parts[1])
        except (IndexError, ValueError) as e:
            raise ValueError(f"--lora {text!r}: write r,alpha[,targets...], e.g. 8,16,query,value") from e
        if r < 1 or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"--lora {text!r}: r must be an int >= 1 and alpha a positive number")
        return cls(r, alpha, tuple(parts[2:]) or DEFAULT_TARGETS)


class LoraDelta(nn.Module):
    """Parametrization W -> W + alpha / r * B @ A for row blocks ``parts`` (name -> (start, stop)) of W (out, in)."""

    def __init__(self, weight: torch.Tensor, parts: dict[str, tuple[int, int]], r: int, alpha: float) -> None:
        super().__init__()
        self.parts, self.scaling = parts, alpha / r
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, (start, stop) in parts.items():
            a = torch.empty(r, weight.shape[1], dtype=torch.float32, device=weight.device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's init_lora_weights=True
            self.lora_A[name] = nn.Parameter(a)  # (r, in)
            self.lora_B[name] = nn.Parameter(torch.zeros(stop - start, r, device=weight.device))  # (rows, r)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = torch.zeros_like(weight)
        for name, (start, stop) in self.parts.items():
            update = self.lora_B[name] @ self.lora_A[name]  # (rows, in)
            delta = delta.index_add(0, torch.arange(start, stop, device=weight.device), update.to(weight.dtype))
        return weight + self.scaling * delta


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _row_blocks(name: str, rows: int, fused: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, tuple[int, int]]]:
    """A Linear layer's checkpoint module names -> (its part, its rows): a fused layer of the architecture
    (``fused_linears``) is one block per part, in order and of equal size; any other is itself, whole."""
    for suffix, parts in fused.items():
        if _matches(name, suffix):
            size, stem = rows // len(parts), name.rpartition(".")[0]
            return {f"{stem}.{part}": (part, (i * size, (i + 1) * size)) for i, part in enumerate(parts)}
    return {name: ("weight", (0, rows))}


def apply_lora(model: nn.Module, spec: LoraSpec, heads: Sequence[str]) -> dict[str, tuple[LoraDelta, str]]:
    """Freeze ``model``, add LoRA to the targeted Linear layers and unfreeze them and the ``heads`` modules (the
    task head, trained whole: one module for BERT's, DistilBERT's pre_classifier and classifier).

    Returns transformers' module name -> (its parametrization, its part name), for ``adapter_state``."""
    architecture = architecture_of(model.config)
    found: dict[str, tuple[nn.Linear, dict[str, tuple[int, int]]]] = {}
    names = [n for n, _ in model.named_modules()]
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or any(name == h or name.startswith(h + ".") for h in heads):
            continue
        blocks = _row_blocks(name, module.out_features, architecture.fused_linears)
        names += [hf_name for hf_name, (part, _) in blocks.items() if part != "weight"]
        for hf_name, (part, rows) in blocks.items():
            if any(_matches(hf_name, t) for t in spec.targets):
                found.setdefault(name, (module, {}))[1][part] = rows
    unmatched = [t for t in spec.targets if not any(_matches(n, t) for n in names)]
    if unmatched or not found:
        raise ValueError(f"--lora target {(unmatched or list(spec.targets))[0]!r} matches no Linear layer of the model: "
                         f"{architecture.model_type}'s are {architecture.lora_targets}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapted: dict[str, tuple[LoraDelta, str]] = {}
    for name, (module, parts) in found.items():
        delta = LoraDelta(module.weight, parts, spec.r, spec.alpha)
        parametrize.register_parametrization(module, "weight", delta)
        for part in parts:
            hf_name = name if part == "weight" else f"{name.rpartition('.')[0]}.{part}"
            adapted[hf_name] = (delta, part)
    for head in heads:
        for parameter in model.get_submodule(head).parameters():
            parameter.requires_grad_(True)
    return adapted


def adapter_state(model: nn.Module, adapted: dict[str, tuple[LoraDelta, str]],
                  heads: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors of adapter_model.safetensors under peft's key names."""
    state = {}
    for hf_name, (delta, part) in sorted(adapted.items()):
        state[f"{PEFT_PREFIX}{hf_name}.lora_A.weight"] = delta.lora_A[part].detach().contiguous()
        state[f"{PEFT_PREFIX}{hf_name}.lora_B.weight"] = delta.lora_B[part].detach().contiguous()
    for head in heads:
        for name, tensor in model.get_submodule(head).state_dict().items():
            state[f"{PEFT_PREFIX}{head}.{name}"] = tensor.detach().contiguous()
    return state


def write_adapter(directory: str, model: nn.Module, adapted: dict[str, tuple[LoraDelta, str]], spec: LoraSpec,
                  heads: Sequence[str], task: str, base_model: str) -> None:
    """adapter_config.json + adapter_model.safetensors into ``directory`` (a folder being written, swapped in by
    the caller)."""
    from safetensors.torch import save_file

    task_type = get_task(task).finetune.peft_task_type  # PEFT's name of the task
    config = {"peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model,
              "r": spec.r, "lora_alpha": spec.alpha, "target_modules": sorted(spec.targets),
              "modules_to_save": list(heads), "bias": "none", "lora_dropout": 0.0, "fan_in_fan_out": False,
              "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False}
    save_file(adapter_state(model, adapted, heads), os.path.join(directory, ADAPTER_FILE), metadata={"format": "pt"})
    with open(os.path.join(directory, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
