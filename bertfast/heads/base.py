"""The one base class of every head model: the encoder under ``bert.`` and the heads beside it."""
from __future__ import annotations

import torch
import torch.nn as nn

from bertfast.checkpoint import CheckpointError
from bertfast.config import BertConfig
from bertfast.models.registry import architecture_of
from bertfast.outputs import BaseModelOutputWithPooling
from bertfast.padding import PackedBatch
from bertfast.pretrained import BertPreTrainedModel


class BertWithHeads(BertPreTrainedModel):
    """The encoder of the config's architecture (a BertModel for BERT) under ``bert.`` (with a pooler where a head reads it) and its heads: the pretraining ones under
    ``cls.`` (``head_class``), or a task's linear head (``_head``, under ``new_head_prefixes``)."""

    base_model_prefix = "bert"
    add_pooling_layer: bool
    head_class: type[nn.Module] | None = None  # the pretraining heads, built under ``cls.``; None for a task head
    head_output_weight: str | None = None  # the task head's output layer's weight (default: new_head_prefixes' first)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        encoder = architecture_of(config).encoder_class(config, add_pooling_layer=self.add_pooling_layer)
        setattr(self, self.base_model_prefix, encoder)  # "bert", as transformers names it (RoBERTa's: "roberta")
        if self.head_class is not None:
            self.cls = self.head_class(config)
            self.cls.apply(self._init_module)

    def _head(self, outputs: int) -> nn.Linear:
        """A new (outputs, H) linear head, initialised as transformers does: normal(0, initializer_range), zero
        bias."""
        head = nn.Linear(self.config.hidden_size, outputs)
        self._init_module(head)
        return head

    def _encode(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None, output_hidden_states: bool,
                output_attentions: bool, padding_states: bool = False) -> BaseModelOutputWithPooling:
        """The encoder on the head's inputs: padded (B, S) or a PackedBatch (see BertModel.forward)."""
        return self.base_model(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                         output_attentions, padding_states=padding_states)

    @classmethod
    def _build(cls, config: BertConfig, state: dict[str, torch.Tensor]) -> "BertWithHeads":
        """The model for ``config``; a checkpoint task head with another number of outputs is an error naming
        both."""
        model = cls(config)
        if not cls.new_head_prefixes:
            return model
        key = cls.head_output_weight or cls.new_head_prefixes[0] + "weight"
        expected = model.state_dict()[key].shape[0]
        if key in state and state[key].shape[0] != expected:
            raise CheckpointError(
                f"{cls.__name__}: the checkpoint's {key} has {state[key].shape[0]} outputs but the model needs "
                f"{expected} ({model._head_size_source()}); load the checkpoint without num_labels / id2label, or "
                f"pass the number of labels its head was trained with")
        return model

    def _head_size_source(self) -> str:
        return f"num_labels={self.config.num_labels}"
