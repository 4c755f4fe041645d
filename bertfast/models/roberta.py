"""RoBERTa and the models built on its code -- XLM-RoBERTa and CamemBERT -- in the architecture slot: BERT's blocks,
with transformers' RoBERTa names (``roberta.`` in the head models, ``lm_head.``), ``type_vocab_size`` 1, and
positions counted from ``padding_idx + 1`` over the real tokens.

Positions: bertfast's position ids count a sequence's tokens from 0 on every path (a PackedBatch's, a padded batch
without position_ids); RoBERTa's embedding adds ``padding_idx + 1`` (``RobertaConfig.position_offset``), which gives
transformers' ``create_position_ids_from_input_ids`` exactly, padding positions included (they read the padding
row). Padded ``position_ids`` given by the caller are transformers' (rows of the position table).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bertfast.config import BertConfig
from bertfast.models.bert import FUSED_LINEARS, BertEmbeddings, BertModel, linear_layers
from bertfast.models.keys import KeyRules
from bertfast.models.registry import Architecture, register

MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")  # one architecture, three names on the hub
HEAD_PREFIXES = ("lm_head.", "classifier.", "qa_outputs.")
KEY_RULES = KeyRules("roberta", HEAD_PREFIXES, decoder_weight="lm_head.decoder.weight",
                     decoder_bias="lm_head.decoder.bias", mlm_bias="lm_head.bias")
HEADS = "bertfast.heads.roberta"
MODEL_CLASSES = {role: f"{HEADS}:Roberta{role}" for role in (
    "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")}


@dataclass
class RobertaConfig(BertConfig):
    """BertConfig's fields with RoBERTa's defaults (transformers' RobertaConfig): <pad> is id 1, positions start
    after it."""

    vocab_size: int = 50265  # roberta-base's byte-level BPE vocabulary
    pad_token_id: int = 1  # <pad>; also the position table's padding row
    model_type: str = "roberta"  # one of MODEL_TYPES
    model_types = MODEL_TYPES

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1

    def validate(self) -> None:
        super().validate()
        if self.max_position_embeddings <= self.position_offset:
            raise ValueError(f"config.max_position_embeddings ({self.max_position_embeddings}) leaves no position after "
                             f"the first {self.position_offset} rows, which RoBERTa keeps for padding "
                             f"(pad_token_id + 1): is config.json damaged?")


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings; the positions it is given count from 0, the table's rows from ``padding_idx + 1``."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.offset = config.position_offset

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:  # a padded batch: count the tokens that are not <pad>; <pad> reads row padding_idx
            real = input_ids.ne(self.word_embeddings.padding_idx).long()
            position_ids = real.cumsum(dim=-1) * real - 1  # (B, S)
        return super().forward(input_ids, token_type_ids, position_ids + self.offset)


class RobertaModel(BertModel):
    """The encoder: BERT's layers and pooler over RoBERTa's embeddings."""

    embeddings_class = RobertaEmbeddings

    def _own_positions(self, position_ids: torch.Tensor | None) -> torch.Tensor | None:
        """transformers' position ids (table rows) -> bertfast's (from 0)."""
        return None if position_ids is None else position_ids - self.config.position_offset


for _model_type in MODEL_TYPES:
    register(Architecture(
        model_type=_model_type, config_class=RobertaConfig, encoder_class=RobertaModel,
        remap_state_dict=KEY_RULES.remap_state_dict, head_prefixes=HEAD_PREFIXES,
        checkpoint_key=KEY_RULES.checkpoint_key, linear_layers=linear_layers, fused_linears=FUSED_LINEARS,
        lora_targets="query, key, value, dense (attention.output.dense, intermediate.dense, output.dense)",
        model_classes=MODEL_CLASSES, bert_heads=False))
