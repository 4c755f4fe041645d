"""The architecture slot: one ``Architecture`` entry per ``model_type``, registered by the module that defines it
(``bertfast/models/<arch>.py``; BERT's is ``bertfast.models.bert``), and the lookups the loader makes in it.

An entry holds every fact of its architecture that code outside its module needs: its config class (the fields and
the checks on them), its encoder class (embeddings and layers), the pure key remap from the checkpoints
transformers writes, the prefixes of its heads, the fused linear layers and the names of their parts, and an
iterator over the encoder's linear layers (the CPU GEMM choice and int8 replace them through it). Nothing outside
an architecture's own module names its modules. This module imports nothing of bertfast at its top (a built-in
architecture's module is imported at its first lookup, ``BUILT_IN``), so that the loader, the config and every
architecture can import it.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:  # annotations only: the registry imports nothing of bertfast at run time
    import torch
    import torch.nn as nn


# joins the checkpoint names of the tensors a remap fused into one key, in its ``origin`` (e.g. query + key + value)
FUSED_ORIGIN = " + "


@dataclass(frozen=True)
class LinearSlot:
    """One linear layer of an encoder: ``getattr(parent, attribute)``, at ``name`` in the model's module tree."""

    parent: "nn.Module"
    attribute: str
    name: str  # e.g. "encoder.layer.0.attention.self.qkv" (relative to the encoder)

    @property
    def linear(self) -> "nn.Module":
        return getattr(self.parent, self.attribute)

    def replace(self, module: "nn.Module") -> None:
        setattr(self.parent, self.attribute, module)


@dataclass(frozen=True)
class Architecture:
    """Everything bertfast knows about one ``model_type`` (see the module docstring)."""

    model_type: str  # config.json's "model_type", the key of the registry
    config_class: type  # a BertConfig (sub)class: its fields and its validate()
    encoder_class: type  # the bare encoder (a BertPreTrainedModel with base_model_prefix ""), built from the config
    # pure: (checkpoint state, nested under the heads' encoder attribute?, tie_word_embeddings) ->
    # (state under our module keys, each new key's checkpoint name, or names joined by FUSED_ORIGIN for a fused
    # key). No module is touched, no tensor copied but the fused ones.
    remap_state_dict: Callable[..., "tuple[dict[str, torch.Tensor], dict[str, str]]"]
    head_prefixes: tuple[str, ...]  # state-dict prefixes of heads beside the encoder (never nested under it)
    # one checkpoint key under the names the remap gives it, not nested (a LoRA adapter's keys are matched by it)
    checkpoint_key: Callable[[str], str]
    # the encoder's linear layers, in forward order: what cpu/gemm and cpu/int8 replace
    linear_layers: Callable[["nn.Module"], Iterator[LinearSlot]]
    # a fused linear's module-name suffix -> the checkpoint's names of its row blocks, in order (LoRA targets them)
    fused_linears: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # the checkpoint modules LoRA may target, for the message when a --lora target matches none
    lora_targets: str = ""
    # the architecture's own model classes by role (transformers' Auto-class suffixes: "ForMaskedLM",
    # "ForSequenceClassification", ...; each class's ``role``), a class or "module:Class" (resolved at first use,
    # so that a core module may name a head class).
    # A role it does not list: BERT's head class over this architecture's encoder where ``bert_heads``, else none.
    model_classes: dict[str, Any] = field(default_factory=dict)
    bert_heads: bool = True

    def model_class(self, role: str, asked: type) -> type:
        """The class that loads this architecture's checkpoints for ``role`` (``asked``: the class the caller
        named), or one ValueError naming the roles it has."""
        if role in self.model_classes:
            named = self.model_classes[role]
            if isinstance(named, str):
                module, _, name = named.partition(":")
                return getattr(importlib.import_module(module), name)
            return named
        if role == "Model":
            return self.encoder_class
        if self.bert_heads:
            return asked
        raise ValueError(f"{asked.__name__}: bertfast has no {role} model for model_type {self.model_type!r} (it has "
                         f"{', '.join(['Model', *self.model_classes])})")


ARCHITECTURES: dict[str, Architecture] = {}
# the architectures bertfast ships: model_type -> the module that registers it, imported at the first lookup
BUILT_IN = {"bert": "bertfast.models.bert", **dict.fromkeys(("roberta", "xlm-roberta", "camembert"),
                                                            "bertfast.models.roberta"),
            "distilbert": "bertfast.models.distilbert", "electra": "bertfast.models.electra",
            "modernbert": "bertfast.models.modernbert"}


def register(architecture: Architecture) -> Architecture:
    """Add (or replace) the entry for ``architecture.model_type``; returns it."""
    ARCHITECTURES[architecture.model_type] = architecture
    return architecture


def unregister(model_type: str) -> None:
    """Remove an entry (a test's toy architecture, once the test is over)."""
    ARCHITECTURES.pop(model_type, None)


def get_architecture(model_type: Any, where: str = "config") -> Architecture:
    """The entry for ``model_type``, or one ValueError that names ``where`` and the model types bertfast runs."""
    if isinstance(model_type, str) and model_type not in ARCHITECTURES and model_type in BUILT_IN:
        importlib.import_module(BUILT_IN[model_type])  # the module registers its entry
    if isinstance(model_type, str) and model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    runs = ", ".join(repr(name) for name in sorted({*ARCHITECTURES, *BUILT_IN}))
    raise ValueError(f"{where}: model_type is {model_type!r}; bertfast runs the architectures {runs} (a checkpoint "
                     f"of another architecture is not an encoder bertfast knows)")


def architecture_of(config: Any) -> Architecture:
    """The entry of a loaded config (its ``model_type``)."""
    return get_architecture(getattr(config, "model_type", None), type(config).__name__)


def config_from_dict(data: dict[str, Any], where: str = "config") -> Any:
    """A config.json's dict as its architecture's config class (``model_type`` picks it; absent: BERT's)."""
    model_type = data.get("model_type", "bert") if isinstance(data, dict) else None
    return get_architecture(model_type, where).config_class.from_dict(data)


def read_config(path: str | os.PathLike, num_labels: int | None = None, id2label: dict[int, str] | None = None) -> Any:
    """A config.json as its architecture's config class: ``model_type`` picks the entry (BERT configs of old
    checkpoints without the field are BERT's); every error names the file."""
    model_type: Any = "bert"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, dict):
            model_type = data.get("model_type", "bert")
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass  # the config class's reader names the file and the problem
    config_class = get_architecture(model_type, os.fspath(path)).config_class
    return config_class.from_json_file(path, num_labels, id2label)
