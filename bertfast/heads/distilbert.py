"""DistilBERT's head models, with transformers' names: the encoder under ``distilbert.``; the MLM head
``vocab_transform`` -> GELU -> ``vocab_layer_norm`` -> ``vocab_projector`` (tied to the word embeddings); the
sequence and multiple-choice heads ``pre_classifier`` -> ReLU -> dropout (seq_classif_dropout) -> ``classifier`` on
each sequence's first token; question answering's dropout (qa_dropout) before ``qa_outputs``; token classification
is BERT's head. The forward signatures, outputs and losses are BERT's (bertfast.heads)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast.config import BertConfig
from bertfast.heads.pretraining import BertForMaskedLM, decode, dense_gelu_norm, vocabulary_decoder
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification, FirstTokenHead, first_tokens)
from bertfast.outputs import BaseModelOutputWithPooling

PREFIX = "distilbert"  # transformers' DistilBertPreTrainedModel.base_model_prefix


class DistilBertForMaskedLM(BertForMaskedLM):
    base_model_prefix = PREFIX
    head_class = None

    def __init__(self, config: BertConfig):
        super().__init__(config)
        width = config.hidden_size
        self.vocab_transform = nn.Linear(width, width)
        self.vocab_layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.vocab_projector = vocabulary_decoder(width, config.vocab_size, config.tie_word_embeddings)
        for module in (self.vocab_transform, self.vocab_layer_norm, self.vocab_projector):
            module.apply(self._init_module)

    def mlm_logits(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """MLM logits for any selection of hidden states (..., H) -> (..., vocab); the GELU is config.activation's."""
        hidden = dense_gelu_norm(sequence_output, self.vocab_transform, self.vocab_layer_norm,
                                 self.config.gelu_approximate)
        return decode(hidden, self.vocab_projector, self.base_model.embeddings.word_embeddings.weight)


class PreClassifierHead(FirstTokenHead):
    """Mixin (listed first) of DistilBERT's sequence and multiple-choice heads: each sequence's first token ->
    ``pre_classifier`` (H, H) -> ReLU -> dropout (seq_classif_dropout) -> ``classifier``; no pooler."""

    add_pooling_layer = False
    new_head_prefixes = ("classifier.", "pre_classifier.")

    def __init__(self, config: BertConfig):
        super().__init__(config)  # the head class after this mixin
        self.pre_classifier = self._head(config.hidden_size)
        self.dropout = nn.Dropout(config.seq_classif_dropout)

    def _logits(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, H) first tokens -> (N, outputs): a sequence classifier's logits, or a choice's score."""
        return self.classifier(self.dropout(F.relu(self.pre_classifier(first_tokens(out)))))

    _scores = _logits  # BertForMultipleChoice's override point


class DistilBertForSequenceClassification(PreClassifierHead, BertForSequenceClassification):
    base_model_prefix = PREFIX


class DistilBertForMultipleChoice(PreClassifierHead, BertForMultipleChoice):
    base_model_prefix = PREFIX


class DistilBertForTokenClassification(BertForTokenClassification):
    base_model_prefix = PREFIX  # dropout (config.dropout) -> classifier, as BERT's


class DistilBertForQuestionAnswering(BertForQuestionAnswering):
    base_model_prefix = PREFIX

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.qa_dropout)

    def _span_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.qa_outputs(self.dropout(hidden))
