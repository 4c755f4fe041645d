"""ModernBERT in the architecture slot (transformers' ``ModernBertModel``, ``model_type: "modernbert"``), with
transformers' names: ``model.embeddings.{tok_embeddings,norm}``, ``model.layers.N.{attn_norm, attn.Wqkv, attn.Wo,
mlp_norm, mlp.Wi, mlp.Wo}``, ``model.final_norm``.

What differs from BERT, each as transformers' modeling_modernbert.py defines it:
- no position table: rotary embeddings on the queries and keys (``rotate_half`` pairs), theta per layer type
  (``rope_parameters``: 160000 on global layers, 10000 on sliding-window ones);
- the layer types: ``layer_types`` (or every ``global_attn_every_n_layers``-th layer global, from layer 0); a
  "sliding_attention" layer attends to keys within ``local_attention // 2`` positions on either side (inclusive),
  run by the windowed attention (``ops.varlen_attention(..., window=)``), which never computes outside the band;
- pre-norm layers: ``h + attn(attn_norm(h))`` then ``h + mlp(mlp_norm(h))``; layer 0's attn_norm is the identity;
  LayerNorms without bias unless ``norm_bias``; an embedding norm and a ``final_norm``;
- a fused ``Wqkv`` and ``Wo`` without biases (``attention_bias``), and a GeGLU MLP: ``Wi`` gives 2 x
  intermediate_size, ``act(input) * gate``, then ``Wo`` (``ops.linear_geglu``);
- no token types (token_type_ids are ignored) and no pooler; the heads are bertfast.heads.modernbert.

Positions: bertfast counts a sequence's tokens from 0 (a PackedBatch's positions); a padded batch without
position_ids uses 0 .. S - 1 on every row, as transformers does (with left padding the rotary angles are then shifted
by the padding, which leaves every query-key angle difference, and so the attention, as it is). Hidden states, as
transformers 5 returns them: the embeddings, each layer's output but the last, then the final norm of the last.

The config's fields are transformers' ModernBertConfig's in config.json (``hidden_activation``, ``norm_eps``, ...) and
BertConfig's in bertfast (``ModernBertConfig``): read by ``from_dict``, written back by ``to_dict``, with the older
``global_rope_theta`` / ``local_rope_theta`` fields of the first checkpoints read too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn

from bertfast import ops
from bertfast.config import GELU_APPROXIMATE, BertConfig, checked_in_own_names
from bertfast.models.bert import BertModel
from bertfast.models.keys import KeyRules
from bertfast.models.registry import Architecture, LinearSlot, register
from bertfast.outputs import BaseModelOutputWithPooling
from bertfast.padding import PackedBatch

LAYER_TYPES = ("full_attention", "sliding_attention")
DEFAULT_THETA = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}  # transformers' default_theta
LEGACY_THETA = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}
HEAD_PREFIXES = ("head.", "decoder.", "classifier.")
KEY_RULES = KeyRules("model", HEAD_PREFIXES, decoder_weight="decoder.weight", decoder_bias="decoder.bias",
                     mlm_bias="decoder.bias", word_embeddings="embeddings.tok_embeddings.weight")
HEADS = "bertfast.heads.modernbert"
MODEL_CLASSES = {role: f"{HEADS}:ModernBert{role}" for role in (
    "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")}
# config.json's ModernBERT field -> BertConfig's
RENAMES = {"hidden_activation": "hidden_act", "norm_eps": "layer_norm_eps", "embedding_dropout": "hidden_dropout_prob",
           "attention_dropout": "attention_probs_dropout_prob"}
RENAMES_BACK = {bert: ours for ours, bert in RENAMES.items()}
# BertConfig fields that ModernBERT's config.json does not have (read from it never, written never)
NOT_READ = ("type_vocab_size", "position_embedding_type")
POOLINGS = ("cls", "mean")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ModernBertConfig(BertConfig):
    """BertConfig's fields with ModernBERT's defaults (transformers' ModernBertConfig, answerdotai/ModernBERT-base),
    and its own: the layer types and their rotary thetas, the window, the biases and the heads' settings."""

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    hidden_act: str = "gelu"  # hidden_activation
    hidden_dropout_prob: float = 0.0  # embedding_dropout
    attention_probs_dropout_prob: float = 0.0  # attention_dropout (the probabilities and after Wo)
    max_position_embeddings: int = 8192
    type_vocab_size: int = 1  # no segment table: token_type_ids are ignored
    layer_norm_eps: float = 1e-5  # norm_eps
    pad_token_id: int = 50283
    model_type: str = "modernbert"
    classifier_dropout: float = 0.0  # before the task heads' classifier
    bos_token_id: int | None = 50281
    eos_token_id: int | list[int] | None = 50282
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_bias: bool = False  # the prediction head's dense
    classifier_activation: str = "gelu"
    classifier_pooling: str = "cls"  # "cls" or "mean": what the sequence and multiple-choice heads read
    local_attention: int = 128  # the window's width: a sliding layer sees local_attention // 2 on either side
    global_attn_every_n_layers: int = 3  # layer_types when config.json has none: layer i is global if i % n == 0
    layer_types: list[str] | None = None
    rope_parameters: dict[str, dict[str, Any]] | None = None
    initializer_cutoff_factor: float = 2.0
    deterministic_flash_attn: bool = False  # flash-attention's option in transformers; kept for round trips
    sparse_prediction: bool = False  # MLM logits at labelled positions only, when labels are given
    sparse_pred_ignore_index: int = -100
    model_types = ("modernbert",)
    token_types = False

    def __post_init__(self) -> None:
        if self.layer_types is None and isinstance(self.global_attn_every_n_layers, int) \
                and not isinstance(self.global_attn_every_n_layers, bool) and self.global_attn_every_n_layers > 0 \
                and isinstance(self.num_hidden_layers, int):
            every = self.global_attn_every_n_layers
            self.layer_types = [LAYER_TYPES[bool(i % every)] for i in range(self.num_hidden_layers)]
        params = {} if self.rope_parameters is None else self.rope_parameters
        if isinstance(params, dict):
            self.rope_parameters = {kind: {"rope_type": "default", "rope_theta": DEFAULT_THETA[kind],
                                           **(params.get(kind) or {})} for kind in LAYER_TYPES}
        super().__post_init__()

    @property
    def sliding_window(self) -> int:
        """Keys on either side of a query that a sliding layer attends to (transformers' ``sliding_window``)."""
        return self.local_attention // 2

    def window(self, layer: int) -> tuple[int, int] | None:
        """Layer ``layer``'s attention window (left, right), None for a global layer."""
        if self.layer_types[layer] == "full_attention":
            return None
        return self.sliding_window, self.sliding_window

    flops_formula = ("sum over layers of (8 L H^2 + 6 L H I + 4 L K H), K = min(L, 2 w + 1) keys on a sliding "
                     "layer, L on a global one; no pooler")

    def matmul_flops(self, length: int) -> int:
        """As BertConfig's, with the gated feed-forward (Wi H -> 2I, Wo I -> H: 6LHI), at most ``2w + 1`` keys
        per query on a sliding layer (window w each side; the band's ends, which see fewer, are not subtracted)
        and no pooler."""
        h, i = self.hidden_size, self.intermediate_size
        keys = [length if w is None else min(length, w[0] + w[1] + 1)
                for w in map(self.window, range(self.num_hidden_layers))]
        return sum(8 * length * h * h + 6 * length * h * i + 4 * length * k * h for k in keys)

    def rope_theta(self, layer: int) -> float:
        return float(self.rope_parameters[self.layer_types[layer]]["rope_theta"])

    @property
    def classifier_approximate(self) -> str:
        return GELU_APPROXIMATE[self.classifier_activation]

    @property
    def head_dropout(self) -> float:
        return self.classifier_dropout

    def validate(self) -> None:
        """BertConfig's checks, naming config.json's ModernBERT fields; then ModernBERT's own."""
        checked_in_own_names(super().validate, RENAMES)
        for name in ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias", "classifier_bias",
                     "deterministic_flash_attn", "sparse_prediction"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config.{name} must be true or false, got {getattr(self, name)!r}")
        if self.classifier_activation not in GELU_APPROXIMATE:
            raise ValueError(f"config.classifier_activation {self.classifier_activation!r} is not supported; use one "
                             f"of {sorted(GELU_APPROXIMATE)}")
        if self.classifier_pooling not in POOLINGS:
            raise ValueError(f"config.classifier_pooling must be one of {POOLINGS}, got {self.classifier_pooling!r}")
        for name in ("mlp_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if not _number(value) or not 0 <= value < 1:
                raise ValueError(f"config.{name} must be a number in [0, 1), got {value!r}")
        if not isinstance(self.local_attention, int) or isinstance(self.local_attention, bool) \
                or self.local_attention < 2:
            raise ValueError(f"config.local_attention must be an integer >= 2 (the sliding window's width), got "
                             f"{self.local_attention!r}")
        if not isinstance(self.global_attn_every_n_layers, int) or isinstance(self.global_attn_every_n_layers, bool) \
                or self.global_attn_every_n_layers < 1:
            raise ValueError(f"config.global_attn_every_n_layers must be a positive integer, got "
                             f"{self.global_attn_every_n_layers!r}")
        if not isinstance(self.layer_types, list) or len(self.layer_types) != self.num_hidden_layers \
                or any(kind not in LAYER_TYPES for kind in self.layer_types):
            raise ValueError(f"config.layer_types must list one of {LAYER_TYPES} per layer "
                             f"(num_hidden_layers={self.num_hidden_layers}), got {self.layer_types!r}")
        if not isinstance(self.rope_parameters, dict):
            raise ValueError(f"config.rope_parameters must map {LAYER_TYPES} to their rotary settings, got "
                             f"{self.rope_parameters!r}")
        for kind, params in self.rope_parameters.items():
            if not isinstance(params, dict) or params.get("rope_type", "default") != "default":
                raise ValueError(f"config.rope_parameters[{kind!r}] is {params!r}: bertfast runs ModernBERT's default "
                                 f"rotary embedding only (rope_type 'default'); scaled variants are not supported")
            if not _number(params.get("rope_theta")) or params["rope_theta"] <= 0:
                raise ValueError(f"config.rope_parameters[{kind!r}]['rope_theta'] must be a positive number, got "
                                 f"{params.get('rope_theta')!r}")
        if self.head_dim % 2:
            raise ValueError(f"the head dimension hidden_size / num_attention_heads = {self.head_dim} is odd; rotary "
                             f"embeddings rotate pairs of dimensions")

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_labels: int | None = None,
                  id2label: dict[int, str] | None = None) -> "ModernBertConfig":
        """A ModernBERT config.json dict (transformers' field names, RENAMES; the older global_rope_theta /
        local_rope_theta) -> the config."""
        if isinstance(data, dict):
            data = dict(data)
            params = data.get("rope_parameters")
            if params is None or isinstance(params, dict):
                params = {kind: dict((params or {}).get(kind) or {}) for kind in LAYER_TYPES}
                for kind, legacy in LEGACY_THETA.items():
                    if legacy in data and "rope_theta" not in params[kind]:
                        params[kind]["rope_theta"] = data[legacy]
                data["rope_parameters"] = params
            if data.get("rope_scaling") is not None:
                raise ValueError(f"config.rope_scaling is {data['rope_scaling']!r}: bertfast runs ModernBERT's default "
                                 f"rotary embedding only")
            data = {RENAMES.get(k, k): v for k, v in data.items() if k not in NOT_READ}
        return super().from_dict(data, num_labels, id2label)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict as transformers' ModernBertConfig writes it (its field names), with the older
        theta fields beside rope_parameters for transformers 4.x."""
        data = super().to_dict()
        for name in NOT_READ:
            data.pop(name, None)
        data = {RENAMES_BACK.get(k, k): v for k, v in data.items()}
        for kind, legacy in LEGACY_THETA.items():
            data[legacy] = self.rope_parameters[kind]["rope_theta"]
        return data


def _norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """A LayerNorm of ModernBERT's (bias only with norm_bias) through the fused op."""
    return ops.layer_norm(x, norm.weight, norm.bias, norm.eps)


def layer_norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)


class ModernBertEmbeddings(nn.Module):
    """tok_embeddings -> norm -> drop: (B, S) ids -> (B, S, H); no positions (rotary, in the layers), no segments."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = layer_norm(config)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The token table, under the name the heads and pipelines read (BERT's)."""
        return self.tok_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(_norm(self.tok_embeddings(input_ids), self.norm))


class ModernBertAttention(nn.Module):
    """Wqkv -> rotary on q and k -> attention (global, or within the layer's window) -> Wo -> out_drop."""

    def __init__(self, config: ModernBertConfig, layer: int):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_probs_dropout_prob)
        self.dropout_p = config.attention_probs_dropout_prob
        self.theta = config.rope_theta(layer)
        self.window = config.window(layer)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Padded: hidden (B, S, H), positions (B, S), key_padding_mask (B, S) or None. Packed: hidden (T, H),
        positions (T,), cu_seqlens (B + 1,) and max_seqlen. -> the attention output of hidden's shape and, with
        output_attentions (padded only), the probabilities (B, heads, S, S)."""
        shape = hidden.shape
        qkv = self.Wqkv(hidden).view(-1, 3, self.num_heads, self.head_dim)  # (N, 3, h, D): N tokens
        qkv = ops.rotary_qkv(qkv, positions.reshape(-1), self.theta)
        probs = None
        dropout_p = self.dropout_p if self.training else 0.0
        if cu_seqlens is None and self.window is not None and key_padding_mask is None and not output_attentions \
                and dropout_p == 0.0 and not ops.exporting():  # B rows without padding: B packed sequences, so
            # the band stays linear (not in a traced graph, whose shapes are not those of the trace)
            max_seqlen = shape[1]
            cu_seqlens = torch.arange(0, shape[0] * shape[1] + 1, shape[1], dtype=torch.int32, device=hidden.device)
        if cu_seqlens is not None:
            context = ops.varlen_attention(qkv, cu_seqlens, max_seqlen, window=self.window)  # (T, h, D)
        else:
            q, k, v = qkv.view(*shape[:2], 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            context, probs = ops.attention(q, k, v, key_padding_mask, dropout_p=dropout_p,
                                           need_weights=output_attentions, window=self.window)  # (B, h, S, D)
            context = context.transpose(1, 2)
        return self.out_drop(self.Wo(context.reshape(shape))), probs


class ModernBertMLP(nn.Module):
    """Wi (H -> 2 x intermediate) -> act(input) * gate -> drop -> Wo."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.approximate = config.gelu_approximate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.Wo(self.drop(ops.linear_geglu(hidden, self.Wi, self.approximate)))


class ModernBertEncoderLayer(nn.Module):
    """h + attn(attn_norm(h)), then h + mlp(mlp_norm(h)); layer 0's attn_norm is the identity (the embedding norm
    precedes it)."""

    def __init__(self, config: ModernBertConfig, layer: int):
        super().__init__()
        self.attn_norm = nn.Identity() if layer == 0 else layer_norm(config)
        self.attn = ModernBertAttention(config, layer)
        self.mlp_norm = layer_norm(config)
        self.mlp = ModernBertMLP(config)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = hidden if isinstance(self.attn_norm, nn.Identity) else _norm(hidden, self.attn_norm)
        attended, probs = self.attn(normed, positions, key_padding_mask, cu_seqlens, max_seqlen, output_attentions)
        hidden = hidden + attended
        return hidden + self.mlp(_norm(hidden, self.mlp_norm)), probs


class ModernBertModel(BertModel):
    """The encoder: embeddings, ``layers`` and ``final_norm``; BertModel's padded and packed entry points (see
    BertModel.forward), no pooler."""

    has_pooler = False

    def __init__(self, config: ModernBertConfig, add_pooling_layer: bool | None = None):
        if add_pooling_layer:
            raise ValueError("ModernBertModel: modernbert has no pooler (its heads pool the hidden states): pass "
                             "add_pooling_layer=False")
        super(BertModel, self).__init__(config)  # BertPreTrainedModel's: the module tree is ModernBERT's own
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = layer_norm(config)
        self.pooler = None
        self.init_weights()

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               position_ids: torch.Tensor | None) -> torch.Tensor:
        return self.embeddings(input_ids)

    def _run_stack(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None,
                   cu_seqlens: torch.Tensor | None, max_seqlen: int | None, position_ids: torch.Tensor | None,
                   output_hidden_states: bool, output_attentions: bool
                   ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """The layers and final_norm; position_ids (B, S) or packed (T,), None = 0 .. S - 1 on every row."""
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).expand(hidden.shape[:2])
        all_hidden = [hidden] if output_hidden_states else None
        all_probs = [] if output_attentions else None
        for layer in self.layers:
            hidden, probs = layer(hidden, position_ids, key_padding_mask, cu_seqlens, max_seqlen, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_probs is not None:
                all_probs.append(probs)
        hidden = _norm(hidden, self.final_norm)
        if all_hidden is not None:
            all_hidden[-1] = hidden  # transformers 5 returns the final norm's output as the last hidden state
        return hidden, None if all_hidden is None else tuple(all_hidden), \
            None if all_probs is None else tuple(all_probs)


def linear_layers(encoder: nn.Module) -> Iterator[LinearSlot]:
    """A ModernBertModel's linear layers in forward order, per layer: attn.Wqkv, attn.Wo, mlp.Wi, mlp.Wo."""
    for i, layer in enumerate(encoder.layers):
        for parent, attribute, name in ((layer.attn, "Wqkv", "attn.Wqkv"), (layer.attn, "Wo", "attn.Wo"),
                                        (layer.mlp, "Wi", "mlp.Wi"), (layer.mlp, "Wo", "mlp.Wo")):
            yield LinearSlot(parent, attribute, f"layers.{i}.{name}")


ARCHITECTURE = register(Architecture(
    model_type="modernbert", config_class=ModernBertConfig, encoder_class=ModernBertModel,
    remap_state_dict=KEY_RULES.remap_state_dict, head_prefixes=HEAD_PREFIXES, checkpoint_key=KEY_RULES.checkpoint_key,
    linear_layers=linear_layers, lora_targets="Wqkv, Wo, Wi", model_classes=MODEL_CLASSES, bert_heads=False))
