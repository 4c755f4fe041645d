"""sentence-transformers folders: what ``modules.json`` and its modules' files say about turning BERT's token
vectors into the folder's embedding, read without sentence-transformers.

Understood modules (matched by class name, so both the old ``sentence_transformers.models.Pooling`` and the new
``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` spellings work):
- a ``SentenceTransformer`` folder: ``Transformer`` (at the folder root) -> ``Pooling`` -> any ``Dense`` ->
  an optional ``Normalize``;
- a ``SparseEncoder`` (SPLADE) folder: ``Transformer`` with ``transformer_task: fill-mask`` (or the legacy
  ``MLMTransformer``) -> ``SpladePooling``.
Anything else (other modules, another order, a Transformer in a subfolder, a Dense activation other than Tanh or
Identity) is a ``ValueError`` that names it. ``sentence_bert_config.json`` gives ``max_seq_length`` and
``do_lower_case``; ``config_sentence_transformers.json`` the prompts and the default prompt name.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file

from bertfast.checkpoint import check_readable, is_inside
from bertfast.hub import resolve_file

# sentence-transformers' pooling modes, in the order it concatenates them when several are on
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# the pooling config's legacy boolean keys (all-MiniLM-L6-v2 and most hub models) -> mode, same order
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                       "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
DENSE_ACTIVATIONS = {"torch.nn.modules.activation.Tanh": "tanh", "torch.nn.modules.linear.Identity": "identity"}
SPLADE_POOLINGS = ("max", "sum")
SPLADE_ACTIVATIONS = ("relu", "log1p_relu")  # log(1 + relu(x)), and log(1 + log(1 + relu(x)))
SENTENCE_EMBEDDING = "sentence_embedding"  # the feature Dense and Normalize must act on


@dataclass
class DenseLayer:
    """A sentence-transformers ``Dense`` module: activation(x @ weight.T + bias)."""

    weight: torch.Tensor  # (out_features, in_features)
    bias: torch.Tensor | None  # (out_features,)
    activation: str  # "tanh" or "identity"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, out_features), computed on x's device in x's dtype."""
        bias = None if self.bias is None else self.bias.to(x)
        y = torch.nn.functional.linear(x, self.weight.to(x), bias)
        return torch.tanh(y) if self.activation == "tanh" else y


@dataclass
class SentenceConfig:
    """What a sentence-transformers folder asks of the embedding pipelines."""

    model_type: str  # "SentenceTransformer" (feature-extraction) or "SparseEncoder" (sparse-embedding)
    pooling: tuple[str, ...] = ("mean",)  # SentenceTransformer: modes of POOLING_MODES, concatenated in order
    include_prompt: bool = True  # False: prompt tokens are left out of the pooling
    embedding_dimension: int | None = None  # the Pooling's input width (the encoder's hidden size)
    dense: list[DenseLayer] = field(default_factory=list)  # applied to the pooled vector, in order
    normalize: bool = False  # a Normalize module ends the pipeline: L2-normalised embeddings
    splade_pooling: str = "max"  # SparseEncoder: max or sum over tokens
    splade_activation: str = "relu"  # SparseEncoder: relu or log1p_relu, before the log1p
    max_seq_length: int | None = None  # truncation length (None: the tokenizer's model_max_length)
    do_lower_case: bool = False  # lowercase texts before tokenizing
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name -> text prepended to the input
    default_prompt_name: str | None = None  # the prompt used when none is asked for

    def prompt_text(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt to prepend: ``prompt`` itself, else ``prompts[prompt_name]``, else the default prompt."""
        if prompt is not None and prompt_name is not None:
            raise ValueError("pass prompt= or prompt_name=, not both")
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts: {sorted(self.prompts)}")
        return self.prompts[name]


def _read_json(name_or_path: str | os.PathLike, filename: str, local_files_only: bool,
               required: bool = False) -> dict | list | None:
    """A JSON file of the folder (None when absent and not ``required``); a file that is not JSON names itself."""
    path = resolve_file(name_or_path, filename, required=required, local_files_only=local_files_only)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid UTF-8 JSON ({e}); re-download the model folder or fix the file") from e


def _read_modules(name_or_path: str | os.PathLike, local_files_only: bool) -> list[dict] | None:
    """modules.json's entries (None without one), checked: a list of {"type": str, "path": str, "idx": int}, every
    path a folder inside the model folder."""
    modules = _read_json(name_or_path, "modules.json", local_files_only)
    if modules is None:
        return None
    where = os.path.join(os.fspath(name_or_path), "modules.json")
    entry = (lambda m: isinstance(m, dict) and isinstance(m.get("type"), str) and isinstance(m.get("path", ""), str)
             and isinstance(m.get("idx", 0), int))
    if not isinstance(modules, list) or not modules or not all(entry(m) for m in modules):
        raise ValueError(f"{where} must be a non-empty JSON list of modules, each like {{\"idx\": 1, \"path\": "
                         f"\"1_Pooling\", \"type\": \"sentence_transformers.models.Pooling\"}}; got "
                         f"{json.dumps(modules)[:200]}")
    outside = [m["path"] for m in modules if m.get("path") and not is_inside(m["path"])]
    if outside:
        raise ValueError(f"{where} names module folders outside the model folder ({', '.join(outside)}): refused; a "
                         f"module's path is a subfolder of the model folder, such as '1_Pooling'")
    return modules


def _pooling_modes(config: dict) -> tuple[str, ...]:
    """The modes of a Pooling config: the new ``pooling_mode`` (a name or a list) or the legacy booleans."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(m for key, m in LEGACY_POOLING_KEYS.items() if config.get(key, False)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ValueError(f"pooling mode(s) {unknown} are not supported; bertfast pools with {POOLING_MODES}")
    return modes


def _dense_layer(name_or_path: str | os.PathLike, path: str, local_files_only: bool) -> DenseLayer:
    config = _read_json(name_or_path, f"{path}/config.json", local_files_only, required=True)
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in DENSE_ACTIVATIONS:
        raise ValueError(f"Dense module {path}: activation {activation!r} is not supported (bertfast runs "
                         f"{sorted(DENSE_ACTIVATIONS)})")
    if config.get("module_input_name", SENTENCE_EMBEDDING) != SENTENCE_EMBEDDING:
        raise ValueError(f"Dense module {path} acts on {config['module_input_name']!r}; bertfast supports Dense "
                         f"layers on the {SENTENCE_EMBEDDING!r} only")
    if config.get("use_residual"):
        raise ValueError(f"Dense module {path} has use_residual; bertfast runs plain Dense layers only")
    weights = resolve_file(name_or_path, f"{path}/model.safetensors", required=False,
                           local_files_only=local_files_only)
    if weights is not None:
        check_readable(weights)
        state = load_file(weights)
    else:
        weights = resolve_file(name_or_path, f"{path}/pytorch_model.bin", local_files_only=local_files_only)
        state = torch.load(weights, map_location="cpu", weights_only=True)
    weight = state["linear.weight"]
    if tuple(weight.shape) != (config["out_features"], config["in_features"]):
        raise ValueError(f"Dense module {path}: weight {tuple(weight.shape)} disagrees with its config "
                         f"({config['out_features']}, {config['in_features']})")
    return DenseLayer(weight.float(), state["linear.bias"].float() if config.get("bias", True) else None,
                      DENSE_ACTIVATIONS[activation])


def _module_configs(name_or_path: str | os.PathLike, modules: list[dict],
                    local_files_only: bool) -> tuple[list[str], list[tuple[str, str, dict]]]:
    """(class names in order, [(class name, path, its config.json or {})]) of modules.json's entries."""
    entries = []
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind, path = module["type"].rsplit(".", 1)[-1], module.get("path", "")
        config = {} if kind == "Transformer" or not path else (
            _read_json(name_or_path, f"{path}/config.json", local_files_only))
        if kind == "Pooling" and config is None:  # sentence-transformers cannot load a Pooling without it either
            raise FileNotFoundError(f"{os.path.join(os.fspath(name_or_path), 'modules.json')} names the Pooling module "
                                    f"folder {path!r}, but {path or '(no folder)'}/config.json is not there: restore "
                                    f"it (re-download the model folder)")
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"{os.path.join(os.fspath(name_or_path), path, 'config.json')} must hold a JSON object "
                             f"(option name -> value), got a {type(config).__name__}")
        entries.append((kind, path, config or {}))
    return [kind for kind, _, _ in entries], entries


def _check_order(kinds: list[str]) -> str:
    """The model type the module sequence makes, or a ValueError naming what bertfast cannot run."""
    if len(kinds) == 2 and kinds[1] == "SpladePooling" and kinds[0] in ("Transformer", "MLMTransformer"):
        return "SparseEncoder"
    rest = kinds[2:]
    dense = rest[:-1] if rest and rest[-1] == "Normalize" else rest
    if kinds[:2] == ["Transformer", "Pooling"] and all(k == "Dense" for k in dense):
        return "SentenceTransformer"
    raise ValueError(f"modules.json lists {kinds}: bertfast runs Transformer -> Pooling -> Dense* -> Normalize? "
                     f"(sentence embeddings) or Transformer -> SpladePooling (sparse embeddings)")


def read_sentence_config(name_or_path: str | os.PathLike,
                         local_files_only: bool = False) -> SentenceConfig | None:
    """The sentence-transformers configuration of a model folder (local or hub id), or None when it has no
    ``modules.json`` (a plain transformers checkpoint)."""
    modules = _read_modules(name_or_path, local_files_only)
    if modules is None:
        return None
    kinds, entries = _module_configs(name_or_path, modules, local_files_only)
    model_type = _check_order(kinds)
    if entries[0][1]:
        raise ValueError(f"the Transformer module of {os.fspath(name_or_path)!r} lives in the subfolder "
                         f"{entries[0][1]!r} (an old sentence-transformers layout); bertfast reads the encoder from "
                         f"the folder root")
    bert = _read_json(name_or_path, "sentence_bert_config.json", local_files_only) or {}
    task = bert.get("transformer_task", "fill-mask" if kinds[0] == "MLMTransformer" else "feature-extraction")
    expected_task = "fill-mask" if model_type == "SparseEncoder" else "feature-extraction"
    if task != expected_task:
        raise ValueError(f"{os.fspath(name_or_path)!r}: a {model_type} needs a Transformer module with "
                         f"transformer_task {expected_task!r}, this one has {task!r}")
    st = _read_json(name_or_path, "config_sentence_transformers.json", local_files_only) or {}
    config = SentenceConfig(model_type, max_seq_length=bert.get("max_seq_length"),
                            do_lower_case=bool(bert.get("do_lower_case", False)),
                            prompts=dict(st.get("prompts") or {}), default_prompt_name=st.get("default_prompt_name"))
    for kind, path, module_config in entries[1:]:
        if kind == "Pooling":
            config.pooling = _pooling_modes(module_config)
            config.include_prompt = bool(module_config.get("include_prompt", True))
            config.embedding_dimension = module_config.get("embedding_dimension",
                                                           module_config.get("word_embedding_dimension"))
        elif kind == "Dense":
            config.dense.append(_dense_layer(name_or_path, path, local_files_only))
        elif kind == "Normalize":
            if module_config.get("module_input_name", SENTENCE_EMBEDDING) != SENTENCE_EMBEDDING:
                raise ValueError(f"Normalize module {path} acts on {module_config['module_input_name']!r}; "
                                 f"bertfast normalises the {SENTENCE_EMBEDDING!r} only")
            config.normalize = True
        else:  # SpladePooling
            config.splade_pooling = module_config.get("pooling_strategy", "max")
            config.splade_activation = module_config.get("activation_function", "relu")
            if config.splade_pooling not in SPLADE_POOLINGS or config.splade_activation not in SPLADE_ACTIVATIONS:
                raise ValueError(f"SpladePooling {path}: pooling {config.splade_pooling!r} / activation "
                                 f"{config.splade_activation!r} not supported "
                                 f"({SPLADE_POOLINGS} / {SPLADE_ACTIVATIONS})")
    return config
