"""ELECTRA in the architecture slot: BERT's layers and names under ``electra.``, no pooler, and embeddings of their
own width ``embedding_size``, projected to ``hidden_size`` by ``electra.embeddings_project`` when the two differ
(the small models: 128 -> 256).

The same encoder serves the discriminator (ElectraForPreTraining: replaced-token detection) and the generator
(ElectraForMaskedLM); their heads are bertfast.heads.electra. ``embeddings_project`` is not among the linear layers
that int8 / the CPU GEMM replace (it runs once per token on the embedding width; the layers dominate).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from bertfast.config import SIZE_LIMITS, BertConfig
from bertfast.models.bert import FUSED_LINEARS, BertEmbeddings, BertModel, linear_layers
from bertfast.models.keys import KeyRules
from bertfast.models.registry import Architecture, register

HEAD_PREFIXES = ("discriminator_predictions.", "generator_predictions.", "generator_lm_head.", "classifier.",
                 "qa_outputs.", "sequence_summary.")
KEY_RULES = KeyRules("electra", HEAD_PREFIXES, decoder_weight="generator_lm_head.weight",
                     decoder_bias="generator_lm_head.bias", mlm_bias="generator_lm_head.bias")
HEADS = "bertfast.heads.electra"
MODEL_CLASSES = {role: f"{HEADS}:Electra{role}" for role in (
    "ForPreTraining", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
    "ForMultipleChoice")}
# transformers' ElectraSequenceSummary's summary_type values (bertfast's multiple-choice head reads "first")
SUMMARY_TYPES = ("first", "last", "mean", "cls_index", "attn")


@dataclass
class ElectraConfig(BertConfig):
    """BertConfig's fields with ELECTRA's defaults (transformers' ElectraConfig), its embedding width and the
    sequence summary of its multiple-choice head."""

    embedding_size: int = 128  # the embedding tables' width E (projected to hidden_size when they differ)
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    model_type: str = "electra"
    summary_type: str = "first"  # the multiple-choice head's summary: each sequence's first token
    summary_use_proj: bool = True  # a Linear (H, H) on the summary
    summary_activation: str | None = "gelu"  # after it (None: none)
    summary_proj_to_labels: bool = False  # True (project to num_labels) is refused by the multiple-choice head
    summary_first_dropout: float = 0.0  # before the projection
    summary_last_dropout: float = 0.1  # after the activation
    model_types = ("electra",)

    def validate(self) -> None:
        super().validate()
        size = self.embedding_size
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= SIZE_LIMITS["hidden_size"]:
            raise ValueError(f"config.embedding_size must be a positive integer up to {SIZE_LIMITS['hidden_size']:,}, "
                             f"got {size!r}")
        if self.summary_type not in SUMMARY_TYPES:
            raise ValueError(f"config.summary_type {self.summary_type!r} is not one of {SUMMARY_TYPES}")
        for name in ("summary_use_proj", "summary_proj_to_labels"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config.{name} must be true or false, got {getattr(self, name)!r}")
        if self.summary_activation is not None and not isinstance(self.summary_activation, str):
            raise ValueError(f"config.summary_activation must be an activation's name or null, got "
                             f"{self.summary_activation!r}")
        for name in ("summary_first_dropout", "summary_last_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"config.{name} must be a number in [0, 1), got {value!r}")


class ElectraEmbeddings(BertEmbeddings):
    """BERT's embeddings, embedding_size wide: (B, S) ids -> (B, S, E)."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config, config.embedding_size)


class ElectraModel(BertModel):
    """The encoder: ELECTRA's embeddings, ``embeddings_project`` (E -> H) where E != H, BERT's layers; no pooler."""

    embeddings_class = ElectraEmbeddings
    has_pooler = False

    def __init__(self, config: ElectraConfig, add_pooling_layer: bool | None = None):
        super().__init__(config, add_pooling_layer)
        self.embeddings_project = None
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
            self._init_module(self.embeddings_project)

    def _embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
               position_ids: torch.Tensor | None) -> torch.Tensor:
        hidden = super()._embed(input_ids, token_type_ids, position_ids)  # (B, S, E)
        return hidden if self.embeddings_project is None else self.embeddings_project(hidden)  # (B, S, H)


ARCHITECTURE = register(Architecture(
    model_type="electra", config_class=ElectraConfig, encoder_class=ElectraModel,
    remap_state_dict=KEY_RULES.remap_state_dict, head_prefixes=HEAD_PREFIXES, checkpoint_key=KEY_RULES.checkpoint_key,
    linear_layers=linear_layers, fused_linears=FUSED_LINEARS,
    lora_targets="query, key, value, dense (attention.output.dense, intermediate.dense, output.dense)",
    model_classes=MODEL_CLASSES, bert_heads=False))
