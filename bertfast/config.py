"""BertConfig: the fields of a HuggingFace BERT ``config.json`` as a plain dataclass, plus named presets;
and ``resolve_dtype``, the dtype a model is loaded or run in from its name."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

# hidden_act (checkpoint vocabulary) -> GELU's `approximate`, the one vocabulary of ops.py and kernels/ ("none" | "tanh")
GELU_APPROXIMATE = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass
class BertConfig:
    vocab_size: int = 30522  # rows of the word embedding and of the MLM decoder
    hidden_size: int = 768  # model width H
    num_hidden_layers: int = 12  # number of encoder layers
    num_attention_heads: int = 12  # heads per layer; head dim = H / heads
    intermediate_size: int = 3072  # feed-forward width
    hidden_act: str = "gelu"  # "gelu" (exact erf) or "gelu_new" / "gelu_pytorch_tanh" (tanh approximation)
    hidden_dropout_prob: float = 0.1  # dropout after embeddings, attention output and feed-forward output
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    max_position_embeddings: int = 512  # longest sequence the position embedding covers
    type_vocab_size: int = 2  # number of segment (token type) ids
    initializer_range: float = 0.02  # std of the normal init for weights not in a checkpoint
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon everywhere in the model
    pad_token_id: int = 0  # id of [PAD]
    position_embedding_type: str = "absolute"  # only "absolute" is supported
    tie_word_embeddings: bool = True  # MLM decoder shares the word embedding matrix
    architectures: list[str] = field(default_factory=list)  # informational, kept for round trips
    model_type: str = "bert"  # must be "bert"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_approximate(self) -> str:
        return GELU_APPROXIMATE[self.hidden_act]

    def validate(self) -> None:
        """Every field's type and range, so a bad config.json fails at load naming the field, not at a forward."""
        for name in ("model_type", "hidden_act", "position_embedding_type"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"config.{name} must be a string, got {getattr(self, name)!r}")
        if self.model_type != "bert":
            raise ValueError(f"model_type is {self.model_type!r}; bertfast runs BERT checkpoints "
                             f"(model_type 'bert') only")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if (not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool)
                or not 0 <= self.pad_token_id < self.vocab_size):
            raise ValueError(f"config.pad_token_id must be an integer in [0, vocab_size={self.vocab_size}), "
                             f"got {self.pad_token_id!r}")
        if self.hidden_act not in GELU_APPROXIMATE:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(GELU_APPROXIMATE)}")
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported; only 'absolute' is"
            )
        ranges = {"hidden_dropout_prob": (lambda v: 0 <= v < 1, "in [0, 1)"),
                  "attention_probs_dropout_prob": (lambda v: 0 <= v < 1, "in [0, 1)"),
                  "initializer_range": (lambda v: v >= 0, ">= 0"), "layer_norm_eps": (lambda v: v > 0, "> 0")}
        for name, (in_range, allowed) in ranges.items():
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                    or not in_range(value)):
                raise ValueError(f"config.{name} must be a finite number {allowed}, got {value!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"config.tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}")
        if not isinstance(self.architectures, list) or not all(isinstance(a, str) for a in self.architectures):
            raise ValueError(f"config.architectures must be a list of class names, got {self.architectures!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BertConfig":
        """Build from a config.json dict; keys this runtime does not use (e.g. ``transformers_version``) are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a JSON object (field name -> value), got a {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if data.get("is_decoder") or data.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention BERT configs are not supported; bertfast runs encoders")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """Read a config.json; every error names the file (and the field)."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e}); is it a HuggingFace config.json?") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); is it a HuggingFace config.json?") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_preset(cls, name: str) -> "BertConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**PRESETS[name])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike) -> None:
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


PRESETS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": {},
    "bert-large-uncased": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "intermediate_size": 4096},
    "all-MiniLM-L6-v2": {"hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536},
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
}


DTYPE_NAMES: dict[str, torch.dtype] = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
                                       "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
                                       "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """torch dtype from a dtype or a name such as "float16", "fp16", "bf16"; None is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype]
