"""DistilBERT in the architecture slot: BERT's math (post-LayerNorm layers, learned absolute positions) without token
types or pooler, under transformers' DistilBERT names: ``distilbert.embeddings.{word_embeddings,
position_embeddings,LayerNorm}``, ``distilbert.transformer.layer.N.{attention.{q_lin,k_lin,v_lin,out_lin},
sa_layer_norm, ffn.{lin1,lin2}, output_layer_norm}``.

The layer composes BERT's blocks: q_lin / k_lin / v_lin are one fused ``attention.qkv`` (joined at load by the key
rules, split back on save by BertSelfAttention's state-dict hook) and the two projections run through the same
fused ops as BERT's. Differences from BERT that change numbers: no dropout after ``out_lin``, every LayerNorm's
eps is 1e-12 whatever config.json says (transformers hard-codes it), and token_type_ids are ignored, never checked
nor looked up, since DistilBERT has no segment table.

The config's fields are transformers' DistilBertConfig's (``dim``, ``n_layers``, ...) in config.json and BertConfig's
in bertfast (``DistilBertConfig``): read by ``from_dict``, written back by ``to_dict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn

from bertfast import ops
from bertfast.config import BertConfig, checked_in_own_names
from bertfast.models.bert import BertEmbeddings, BertModel, BertSelfAttention
from bertfast.models.keys import KeyRules
from bertfast.models.registry import Architecture, LinearSlot, register

PARTS = ("q_lin", "k_lin", "v_lin")  # the checkpoint's row blocks of the fused attention.qkv, in order
FUSED_LINEARS = {"attention.qkv": PARTS}
HEAD_PREFIXES = ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.", "classifier.",
                 "qa_outputs.")
KEY_RULES = KeyRules("distilbert", HEAD_PREFIXES, decoder_weight="vocab_projector.weight",
                     decoder_bias="vocab_projector.bias", mlm_bias="vocab_projector.bias", fused_parts=PARTS)
HEADS = "bertfast.heads.distilbert"
MODEL_CLASSES = {role: f"{HEADS}:DistilBert{role}" for role in (
    "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")}
LAYER_NORM_EPS = 1e-12  # transformers' DistilBERT builds every LayerNorm with it; config.json has no field for it
# config.json's DistilBERT field -> BertConfig's
RENAMES = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
           "hidden_dim": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
           "attention_dropout": "attention_probs_dropout_prob"}
RENAMES_BACK = {bert: ours for ours, bert in RENAMES.items()}
# transformers' DistilBertConfig.attribute_map: names it also takes for three of its fields
ALIASES = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}
# BertConfig fields that DistilBERT does not read from config.json (transformers ignores such keys there)
NOT_READ = ("intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps",
            "type_vocab_size", "position_embedding_type", "classifier_dropout")


@dataclass
class DistilBertConfig(BertConfig):
    """BertConfig's fields with DistilBERT's defaults (transformers' DistilBertConfig), and its own head dropouts.
    No token types (``type_vocab_size`` 1, never read or written)."""

    num_hidden_layers: int = 6  # n_layers
    type_vocab_size: int = 1  # no segment table: token_type_ids are ignored
    model_type: str = "distilbert"
    seq_classif_dropout: float = 0.2  # before the sequence and multiple-choice classifiers
    qa_dropout: float = 0.1  # before qa_outputs
    sinusoidal_pos_embds: bool = False  # True (a fixed sinusoidal position table) is refused
    tie_weights_: bool | None = None  # an old field some checkpoints carry; transformers ignores it (kept)
    model_types = ("distilbert",)
    token_types = False  # token_type_ids are ignored (never checked: bertfast.inputs)

    def validate(self) -> None:
        """BertConfig's checks, naming config.json's DistilBERT fields; then DistilBERT's own."""
        checked_in_own_names(super().validate, RENAMES)
        if self.layer_norm_eps != LAYER_NORM_EPS:
            raise ValueError(f"config.layer_norm_eps is {self.layer_norm_eps!r}, but DistilBERT's LayerNorms use "
                             f"{LAYER_NORM_EPS} (transformers' fixed value): leave it out")
        for name in ("seq_classif_dropout", "qa_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"config.{name} must be a number in [0, 1), got {value!r}")
        if self.sinusoidal_pos_embds is not False:
            raise ValueError(f"config.sinusoidal_pos_embds is {self.sinusoidal_pos_embds!r}: bertfast runs DistilBERT "
                             f"with learned positions only; use a checkpoint with sinusoidal_pos_embds false")

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_labels: int | None = None,
                  id2label: dict[int, str] | None = None) -> "DistilBertConfig":
        """A DistilBERT config.json dict (transformers' field names, RENAMES) -> the config."""
        if isinstance(data, dict):
            data = {ALIASES.get(k, k): v for k, v in data.items() if not (k in ALIASES and ALIASES[k] in data)}
            data = {RENAMES.get(k, k): v for k, v in data.items() if k in RENAMES or k not in NOT_READ}
        return super().from_dict(data, num_labels, id2label)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict as transformers' DistilBertConfig writes it (its field names)."""
        data = super().to_dict()
        for name in NOT_READ:
            if name not in RENAMES_BACK:  # BertConfig's fields DistilBERT's config has not (layer_norm_eps, ...)
                del data[name]
        if self.tie_weights_ is None:
            del data["tie_weights_"]
        return {RENAMES_BACK.get(k, k): v for k, v in data.items()}


class DistilBertEmbeddings(BertEmbeddings):
    """BERT's embeddings without the segment table: token_type_ids are ignored, and the fused op adds a zero row
    (exactly BERT's sum without it)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        del self.token_type_embeddings

    def token_type_table(self) -> torch.Tensor:
        return self.word_embeddings.weight.new_zeros(1, self.word_embeddings.embedding_dim)  # (1, H)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, S) -> (B, S, H); token_type_ids are not read (pipelines pass them whatever the model)."""
        return super().forward(input_ids, None, position_ids)


class DistilBertSelfAttention(BertSelfAttention):
    """The fused q_lin / k_lin / v_lin (BertSelfAttention under DistilBERT's names) and ``out_lin``, which the layer
    applies with the residual and sa_layer_norm."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config, PARTS)
        self.out_lin = nn.Linear(config.hidden_size, config.hidden_size)


class FFN(nn.Module):
    """The feed-forward block's weights (lin1 up, lin2 down); TransformerBlock runs them through the fused ops."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.lin1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.lin2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.approximate = config.gelu_approximate


class TransformerBlock(nn.Module):
    """sa_layer_norm(out_lin(attention) + x), then output_layer_norm(dropout(lin2(gelu(lin1(.)))) + .): BERT's
    layer under DistilBERT's names (BertLayer's forward signature and layouts)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Padded (B, S, H) + key_padding_mask, or packed (T, H) + cu_seqlens, as BertLayer."""
        context, probs = self.attention(hidden, key_padding_mask, cu_seqlens, max_seqlen, output_attentions)
        norm = self.sa_layer_norm
        attended = ops.linear_residual_layer_norm(context, self.attention.out_lin, hidden, norm.weight, norm.bias,
                                                  norm.eps)  # no dropout after out_lin, as transformers
        up = ops.linear_gelu(attended, self.ffn.lin1, self.ffn.approximate)
        norm = self.output_layer_norm
        return ops.linear_residual_layer_norm(up, self.ffn.lin2, attended, norm.weight, norm.bias, norm.eps,
                                              self.ffn.dropout.p, self.training), probs


class DistilBertModel(BertModel):
    """The encoder: DistilBERT's embeddings and ``transformer`` layer stack; no pooler."""

    embeddings_class = DistilBertEmbeddings
    layer_class = TransformerBlock
    stack_attribute = "transformer"
    has_pooler = False


def linear_layers(encoder: nn.Module) -> Iterator[LinearSlot]:
    """A DistilBertModel's linear layers in forward order, per layer: the fused qkv, out_lin, ffn.lin1, ffn.lin2."""
    for i, layer in enumerate(encoder.transformer.layer):
        where = f"transformer.layer.{i}."
        for parent, attribute, name in ((layer.attention, "qkv", "attention.qkv"),
                                        (layer.attention, "out_lin", "attention.out_lin"),
                                        (layer.ffn, "lin1", "ffn.lin1"), (layer.ffn, "lin2", "ffn.lin2")):
            yield LinearSlot(parent, attribute, where + name)


ARCHITECTURE = register(Architecture(
    model_type="distilbert", config_class=DistilBertConfig, encoder_class=DistilBertModel,
    remap_state_dict=KEY_RULES.remap_state_dict, head_prefixes=HEAD_PREFIXES, checkpoint_key=KEY_RULES.checkpoint_key,
    linear_layers=linear_layers, fused_linears=FUSED_LINEARS,
    lora_targets="q_lin, k_lin, v_lin, out_lin, lin1, lin2", model_classes=MODEL_CLASSES, bert_heads=False))
