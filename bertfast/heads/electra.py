"""ELECTRA's head models, with transformers' names: the encoder under ``electra.``; the discriminator
(ElectraForPreTraining: ``discriminator_predictions`` dense -> activation -> ``dense_prediction``, one logit per
token that it was replaced); the generator (ElectraForMaskedLM: ``generator_predictions`` dense (H -> E) -> GELU ->
LayerNorm, then ``generator_lm_head`` tied to the word embeddings); sequence classification (``classifier``:
RoBERTa's head with GELU for tanh, on the first token); multiple choice (``sequence_summary`` on the first token,
then ``classifier``). Token classification and question answering are BERT's heads under ``electra.``."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast import ops
from bertfast.config import GELU_APPROXIMATE, BertConfig
from bertfast.heads.base import BertWithHeads
from bertfast.heads.pretraining import BertForMaskedLM, decode, dense_gelu_norm, vocabulary_decoder
from bertfast.heads.roberta import RobertaClassificationHead
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForTokenClassification,
                                  FirstTokenClassification, FirstTokenHead, first_tokens)
from bertfast.inputs import check_real_labels
from bertfast.outputs import BaseModelOutputWithPooling, ElectraForPreTrainingOutput
from bertfast.padding import PackedBatch

PREFIX = "electra"  # transformers' ElectraPreTrainedModel.base_model_prefix


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# config.summary_activation -> the function (transformers' get_activation of the name; none for null or "")
SUMMARY_ACTIVATIONS: dict[str | None, Callable[[torch.Tensor], torch.Tensor]] = {
    None: _identity, "": _identity, "linear": _identity, "tanh": torch.tanh, "relu": F.relu,
    **{name: partial(F.gelu, approximate=approximate) for name, approximate in GELU_APPROXIMATE.items()}}


def replaced_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                        attention_mask: torch.Tensor | None) -> torch.Tensor:
    """transformers' ELECTRA discriminator loss: BCE with logits (B, S) (or packed (T,)) against labels of their
    shape (1 = replaced, 0 = original), over the real tokens (attention_mask 1; all of them without a mask)."""
    check_real_labels(labels, logits.shape, "labels")
    if attention_mask is not None:
        real = attention_mask == 1  # (B, S)
        logits, labels = logits[real], labels[real]
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class ElectraDiscriminatorPredictions(nn.Module):
    """dense (H, H) -> config.hidden_act -> dense_prediction (1, H): hidden (..., H) -> logits (...)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)
        self.approximate = config.gelu_approximate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = ops.dense_gelu(hidden, self.dense.weight, self.dense.bias, self.approximate)
        return self.dense_prediction(hidden).squeeze(-1)


class ElectraForPreTraining(BertWithHeads):
    """The discriminator: one logit per token, > 0 = replaced (by the generator)."""

    role = "ForPreTraining"
    base_model_prefix = PREFIX
    add_pooling_layer = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.discriminator_predictions.apply(self._init_module)

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> ElectraForPreTrainingOutput:
        """input_ids (B, S) -> logits (B, S), or a PackedBatch of T tokens -> (T,); ``loss``
        (``replaced_token_loss``) with labels of the logits' shape."""
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        logits = self.discriminator_predictions(out.last_hidden_state)
        loss = None if labels is None else replaced_token_loss(logits, labels, attention_mask)
        return ElectraForPreTrainingOutput(loss, logits, out.hidden_states, out.attentions)


class ElectraGeneratorPredictions(nn.Module):
    """dense (E, H) -> GELU -> LayerNorm (E): the generator's transform before its decoder."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)


class ElectraForMaskedLM(BertForMaskedLM):
    """The generator: ``generator_predictions`` then ``generator_lm_head`` (vocab, E), tied to the word embeddings."""

    base_model_prefix = PREFIX
    head_class = None

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = vocabulary_decoder(config.embedding_size, config.vocab_size,
                                                    config.tie_word_embeddings)
        for module in (self.generator_predictions, self.generator_lm_head):
            module.apply(self._init_module)

    def mlm_logits(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """MLM logits for any selection of hidden states (..., H) -> (..., vocab); the GELU is exact whatever
        hidden_act says, as transformers'."""
        predictions = self.generator_predictions
        hidden = dense_gelu_norm(sequence_output, predictions.dense, predictions.LayerNorm, "none")  # (..., E)
        return decode(hidden, self.generator_lm_head, self.base_model.embeddings.word_embeddings.weight)


class ElectraClassificationHead(RobertaClassificationHead):
    """RoBERTa's head with an exact GELU for its tanh, as transformers' ElectraClassificationHead."""

    activation = staticmethod(F.gelu)


class ElectraForSequenceClassification(FirstTokenClassification):
    base_model_prefix = PREFIX
    classifier_class = ElectraClassificationHead


class ElectraForTokenClassification(BertForTokenClassification):
    base_model_prefix = PREFIX


class ElectraForQuestionAnswering(BertForQuestionAnswering):
    base_model_prefix = PREFIX


class ElectraSequenceSummary(nn.Module):
    """transformers' ElectraSequenceSummary for summary_type "first" (each sequence's first token): first_dropout ->
    summary (a Linear (H, H) with summary_use_proj) -> summary_activation -> last_dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        if config.summary_type != "first":
            raise ValueError(f"config.summary_type is {config.summary_type!r}: bertfast's ElectraForMultipleChoice "
                             f"reads each sequence's first token only; use summary_type 'first' (ELECTRA's default)")
        if config.summary_proj_to_labels:
            raise ValueError("config.summary_proj_to_labels is true, which gives ElectraForMultipleChoice's "
                             "classifier num_labels inputs where it takes hidden_size: set it false")
        if config.summary_activation not in SUMMARY_ACTIVATIONS:
            raise ValueError(f"config.summary_activation {config.summary_activation!r} is not supported; use one of "
                             f"{sorted(name for name in SUMMARY_ACTIVATIONS if name)} or null")
        width = config.hidden_size
        self.summary = nn.Linear(width, width) if config.summary_use_proj else nn.Identity()
        self.activation = SUMMARY_ACTIVATIONS[config.summary_activation]
        self.first_dropout = nn.Dropout(config.summary_first_dropout)
        self.last_dropout = nn.Dropout(config.summary_last_dropout)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        """(N, H) first tokens -> (N, H)."""
        return self.last_dropout(self.activation(self.summary(self.first_dropout(first))))


class ElectraForMultipleChoice(FirstTokenHead, BertForMultipleChoice):
    """``sequence_summary`` on each (context, choice) sequence's first token -> ``classifier`` (1, H); no pooler."""

    base_model_prefix = PREFIX
    add_pooling_layer = False
    new_head_prefixes = ("classifier.", "sequence_summary.")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.sequence_summary = ElectraSequenceSummary(config)
        self.sequence_summary.apply(self._init_module)
        del self.dropout  # the summary holds its dropouts

    def _scores(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.sequence_summary(first_tokens(out)))
