"""BertConfig: the fields of a HuggingFace BERT ``config.json`` as a plain dataclass, plus named presets;
and ``resolve_dtype``, the dtype a model is loaded or run in from its name."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bertfast.models.registry import get_architecture

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
DEFAULT_NUM_LABELS = 2  # transformers' default when a config names no labels
# hidden_act (checkpoint vocabulary) -> GELU's `approximate`, the one vocabulary of ops.py and kernels/ ("none" | "tanh")
GELU_APPROXIMATE = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
# The largest value each size field may take: far above any real BERT (bert-large / Megatron-BERT 3.9B in the
# comments), so that only a damaged or foreign config.json is refused, at load and at once, instead of building a
# model of a billion layers for minutes (or running out of memory).
SIZE_LIMITS = {
    "vocab_size": 1 << 22,  # 4,194,304 tokens (bert-base 30,522; multilingual vocabularies up to ~500,000)
    "hidden_size": 1 << 16,  # 65,536 (bert-large 1,024; Megatron-BERT 2,560)
    "num_hidden_layers": 256,  # (bert-large 24; Megatron-BERT 48)
    "num_attention_heads": 1024,  # (bert-large 16; Megatron-BERT 40)
    "intermediate_size": 1 << 18,  # 262,144 (bert-large 4,096; Megatron-BERT 10,240)
    "max_position_embeddings": 1 << 17,  # 131,072 positions (BERT 512; long-context BERTs 8,192)
    "type_vocab_size": 1024,  # token type ids (BERT 2)
}
MAX_LABELS = 1 << 20  # 1,048,576: num_labels without id2label (its LABEL_i names are built at load)


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
    model_type: str = "bert"  # the architecture (bertfast.models): one of model_types for this class
    # Task heads (as transformers): the labels' names by id, {int: str} here, {"0": "NEG"} in config.json; None =
    # num_labels names LABEL_0, LABEL_1, ...
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None  # the inverse of id2label; None = derived from it
    num_labels: int | None = None  # classifier outputs; None = len(id2label), or 2 without id2label. Not written
    problem_type: str | None = None  # sequence classification loss: one of PROBLEM_TYPES, None = from the labels
    classifier_dropout: float | None = None  # dropout before a task head; None = hidden_dropout_prob
    model_types: ClassVar[tuple[str, ...]] = ("bert",)  # the architectures this config class describes
    # False: the architecture has no segments (DistilBERT): token_type_ids are ignored, so never checked
    token_types: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._resolve_labels()
        self.validate()

    def _resolve_labels(self) -> None:
        """id2label with int keys, num_labels and label2id filled in and checked against one another."""
        if self.id2label is None:
            count = DEFAULT_NUM_LABELS if self.num_labels is None else self.num_labels
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(f"config.num_labels must be a positive integer, got {count!r}")
            if count > MAX_LABELS:
                raise ValueError(f"config.num_labels is {count:,}, above bertfast's limit of {MAX_LABELS:,} labels")
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}
        self.id2label = _int_keys(self.id2label)
        if self.num_labels is not None and self.num_labels != len(self.id2label):
            raise ValueError(f"config.num_labels is {self.num_labels} but id2label names {len(self.id2label)} labels; "
                             f"drop num_labels (it follows id2label) or make them agree")
        self.num_labels = len(self.id2label)
        inverse = {name: i for i, name in self.id2label.items()}
        if len(inverse) != len(self.id2label):
            raise ValueError(f"config.id2label gives two ids the same name: {self.id2label}; names must be unique")
        if self.label2id is None:
            self.label2id = inverse
        elif self.label2id != inverse:
            raise ValueError(f"config.label2id {self.label2id} is not the inverse of id2label {self.id2label}; fix "
                             f"one of them in config.json, or drop label2id (it is derived from id2label)")

    @property
    def position_offset(self) -> int:
        """Rows of the position table before a sequence's first position (RoBERTa keeps pad_token_id + 1); 0 here."""
        return 0

    @property
    def max_sequence_length(self) -> int:
        """The longest sequence the position table covers, in tokens: max_position_embeddings less the offset."""
        return self.max_position_embeddings - self.position_offset

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_approximate(self) -> str:
        return GELU_APPROXIMATE[self.hidden_act]

    # how bench counts this architecture's FLOPs (bench/workloads.py's FLOPS_FORMULA)
    flops_formula = "layers * (8 L H^2 + 4 L H I + 4 L^2 H) + 2 H^2"

    def matmul_flops(self, length: int) -> int:
        """Matmul FLOPs of the encoder (with pooler) on one sequence of ``length`` real tokens: 2 per multiply-add,
        QKV 6LH^2, attention output 2LH^2, feed-forward 4LHI, scores and context 4L^2H, pooler 2H^2."""
        h, i, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        return n * (8 * length * h * h + 4 * length * h * i + 4 * length * length * h) + 2 * h * h

    @property
    def head_dropout(self) -> float:
        """The dropout before a task head: classifier_dropout, or hidden_dropout_prob when it is None."""
        return self.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout

    def validate(self) -> None:
        """Every field's type and range, so a bad config.json fails at load naming the field, not at a forward."""
        for name in ("model_type", "hidden_act", "position_embedding_type"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"config.{name} must be a string, got {getattr(self, name)!r}")
        if self.model_type not in self.model_types:
            owner = get_architecture(self.model_type).config_class.__name__  # an unknown one: the error names them all
            raise ValueError(f"config.model_type is {self.model_type!r}, which a {type(self).__name__} does not "
                             f"describe ({', '.join(self.model_types)}): build a {owner}, or read config.json with "
                             f"bertfast.models.read_config, which picks the class")
        for name, limit in SIZE_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
            if value > limit:
                raise ValueError(f"config.{name} is {value:,}, above bertfast's limit of {limit:,} (bertfast.config."
                                 f"SIZE_LIMITS): is config.json damaged, or from another kind of model?")
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
        if self.classifier_dropout is not None and (isinstance(self.classifier_dropout, bool) or not isinstance(
                self.classifier_dropout, (int, float)) or not 0 <= self.classifier_dropout < 1):
            raise ValueError(f"config.classifier_dropout must be None or a number in [0, 1), got "
                             f"{self.classifier_dropout!r}")
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise ValueError(f"config.problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES} (or None)")
        if self.problem_type == "single_label_classification" and self.num_labels == 1:
            raise ValueError("problem_type 'single_label_classification' needs num_labels > 1: use num_labels=2 for "
                             "two classes, or problem_type 'regression' for one output")

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_labels: int | None = None,
                  id2label: dict[int, str] | None = None) -> "BertConfig":
        """Build from a config.json dict; keys this runtime does not use (e.g. ``transformers_version``) are ignored.

        ``num_labels`` / ``id2label`` (from_pretrained's) replace the labels: id2label the names, num_labels the
        count (names LABEL_i). A count that disagrees with the labels ``data`` names is an error naming both.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a JSON object (field name -> value), got a {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if data.get("is_decoder") or data.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention BERT configs are not supported; bertfast runs encoders")
        fields = {k: v for k, v in data.items() if k in known}
        if num_labels is not None or id2label is not None:
            fields = _relabelled(fields, num_labels, id2label)
        return cls(**fields)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, num_labels: int | None = None,
                       id2label: dict[int, str] | None = None) -> "BertConfig":
        """``from_dict`` of a config.json file; every error names the file (and the field)."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e}); is it a HuggingFace config.json?") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); is it a HuggingFace config.json?") from e
        if id2label is not None:
            id2label = _int_keys(id2label)  # the caller's argument: its TypeError is not the file's
        try:
            return cls.from_dict(data, num_labels, id2label)
        except (ValueError, TypeError) as e:  # TypeError: an id2label of the wrong shape (a list, "a" keys)
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_preset(cls, name: str) -> "BertConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**PRESETS[name])

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict, as transformers writes it: id2label keys as strings, no num_labels (it follows
        id2label)."""
        data = dataclasses.asdict(self)
        del data["num_labels"]
        data["id2label"] = {str(i): name for i, name in self.id2label.items()}
        return data

    def save(self, directory: str | os.PathLike) -> None:
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


def checked_in_own_names(check: Any, renames: dict[str, str]) -> None:
    """Run ``check`` (BertConfig's validate) for a family whose config.json names BertConfig's fields otherwise
    (``renames``: the family's name -> BertConfig's): its error, if any, names the family's fields."""
    try:
        check()
    except ValueError as e:
        message = str(e)
        for ours, bert in renames.items():
            message = re.sub(rf"\b{bert}\b", ours, message)
        raise ValueError(message) from None


def _int_keys(id2label: Any) -> dict[int, str]:
    """id2label with int keys: JSON writes them as strings ("0"), Python callers pass ints."""
    if not isinstance(id2label, dict) or not id2label:
        raise TypeError(f"id2label must be a non-empty dict {{id: name}}, e.g. {{0: 'NEG', 1: 'POS'}}, "
                        f"got {id2label!r}")
    out = {}
    for key, name in id2label.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)) or not str(key).lstrip("-").isdigit():
            raise TypeError(f"id2label keys must be label ids (ints, or int strings as in config.json), got {key!r}")
        if not isinstance(name, str):
            raise TypeError(f"id2label names must be strings, got {name!r} for id {key}")
        out[int(key)] = name
    if sorted(out) != list(range(len(out))):
        raise ValueError(f"id2label ids must be 0 .. {len(out) - 1}, one per label, got {sorted(out)}")
    return dict(sorted(out.items()))


def _relabelled(fields: dict[str, Any], num_labels: int | None, id2label: dict[int, str] | None) -> dict[str, Any]:
    """config.json's fields with the labels a caller asked for (see ``BertConfig.from_dict``)."""
    if id2label is not None:
        id2label = _int_keys(id2label)
        if num_labels is not None and num_labels != len(id2label):
            raise ValueError(f"num_labels={num_labels} but id2label names {len(id2label)} labels; pass one of them")
        num_labels = len(id2label)
    stated = fields.get("id2label")
    count = len(stated) if isinstance(stated, dict) else fields.get("num_labels")
    if count is not None and count != num_labels:
        raise ValueError(f"num_labels={num_labels} but the checkpoint's config has {count} labels "
                         f"({stated or 'num_labels'}); load it as it is (without num_labels / id2label), or start "
                         f"from a checkpoint without a task head")
    fields = {k: v for k, v in fields.items() if k not in ("id2label", "label2id", "num_labels")}
    if id2label is not None:
        return {**fields, "id2label": id2label}
    if isinstance(stated, dict):  # the same count: the checkpoint's names stay
        return {**fields, "id2label": stated}
    return {**fields, "num_labels": num_labels}


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
