"""ModernBERT's head models, with transformers' names: the encoder under ``model.``; every head starts with the
prediction head ``head`` (dense -> classifier_activation -> norm); masked LM then ``decoder`` (tied to the token
embeddings); the sequence and multiple-choice heads pool first (``classifier_pooling``: "cls", or "mean" over the
real tokens), then ``head`` -> ``drop`` -> ``classifier``; token classification and question answering run
``head`` -> ``drop`` -> ``classifier`` on every token (question answering's classifier gives the start and end
logits). The forward signatures, outputs and losses are BERT's (bertfast.heads).

Pooling "cls" reads position 0 of each row for sequence classification (with left padding that is a padding
position, as in transformers) and each row's first real token for multiple choice (transformers' argmax of the
mask); "mean" averages the real tokens.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from bertfast import ops
from bertfast.config import BertConfig
from bertfast.heads.pretraining import BertForMaskedLM, decode, masked_lm_loss, vocabulary_decoder
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification, FirstTokenHead, first_tokens)
from bertfast.outputs import BaseModelOutputWithPooling, MaskedLMOutput
from bertfast.padding import PackedBatch

PREFIX = "model"  # transformers' ModernBertPreTrainedModel.base_model_prefix


class ModernBertPredictionHead(nn.Module):
    """dense (H, H; a bias with classifier_bias) -> classifier_activation -> norm: (..., H) -> (..., H)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.norm_bias)
        self.approximate = config.classifier_approximate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = ops.linear_gelu(hidden, self.dense, self.approximate)
        return ops.layer_norm(hidden, self.norm.weight, self.norm.bias, self.norm.eps)


class PredictionHead:
    """Mixin (listed first) of ModernBERT's task heads: builds ``head`` and ``drop`` and takes them and
    ``classifier`` as the new head (a checkpoint of the masked LM has ``head`` already, which is then loaded)."""

    base_model_prefix = PREFIX
    add_pooling_layer = False
    new_head_prefixes = ("classifier.", "head.")
    head_output_weight = "classifier.weight"

    def __init__(self, config: BertConfig):
        super().__init__(config)  # the head class after this mixin
        self.head = ModernBertPredictionHead(config)
        self.head.apply(self._init_module)
        self.drop = nn.Dropout(config.head_dropout)
        self.dropout = self.drop  # the base class's name for it

    def _classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> head -> drop -> classifier."""
        return self.classifier(self.drop(self.head(hidden)))


def mean_tokens(out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Each sequence's mean over its real tokens (B, H): of a packed (T, H) output by ``cu_seqlens``, of a padded
    (B, S, H) one by ``attention_mask`` (every position without one)."""
    hidden = out.last_hidden_state
    if out.cu_seqlens is not None:
        lengths = out.cu_seqlens.diff().long()  # (B,)
        rows = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths)  # (T,)
        sums = hidden.new_zeros(len(lengths), hidden.shape[-1]).index_add_(0, rows, hidden)
        return sums / lengths[:, None].to(hidden.dtype)
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype)[..., None]  # (B, S, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)


def first_real_tokens(out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Each sequence's first real token (B, H): where its mask first holds (transformers' argmax), or position 0."""
    if out.cu_seqlens is not None or attention_mask is None:
        return first_tokens(out)
    hidden = out.last_hidden_state
    first = attention_mask.long().argmax(dim=-1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


class ModernBertForMaskedLM(BertForMaskedLM):
    """``head`` then ``decoder`` (vocab, H; a bias with decoder_bias), tied to the token embeddings. With
    config.sparse_prediction and labels, the logits are those of the labelled positions only (N, vocab), as
    transformers returns them."""

    base_model_prefix = PREFIX
    head_class = None

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = vocabulary_decoder(config.hidden_size, config.vocab_size, config.tie_word_embeddings,
                                          config.decoder_bias)
        for module in (self.head, self.decoder):
            module.apply(self._init_module)

    def mlm_logits(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """MLM logits for any selection of hidden states (..., H) -> (..., vocab)."""
        return decode(self.head(sequence_output), self.decoder, self.base_model.embeddings.tok_embeddings.weight)

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> MaskedLMOutput:
        if labels is None or not self.config.sparse_prediction:
            return super().forward(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                                   output_attentions, labels)
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        hidden = out.last_hidden_state
        if not isinstance(labels, torch.Tensor) or labels.shape != hidden.shape[:-1]:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels has shape {shape}; the masked LM takes one label per token, "
                             f"{tuple(hidden.shape[:-1])} here")
        labels = labels.reshape(-1)
        chosen = labels != self.config.sparse_pred_ignore_index
        logits = self.mlm_logits(hidden.reshape(-1, hidden.shape[-1])[chosen])  # (N, vocab)
        return MaskedLMOutput(masked_lm_loss(logits, labels[chosen]), logits, out.hidden_states, out.attentions)


class ModernBertForSequenceClassification(PredictionHead, FirstTokenHead, BertForSequenceClassification):
    """classifier_pooling ("cls": position 0; "mean") -> head -> drop -> ``classifier`` (num_labels, H)."""

    def _encode(self, input_ids, attention_mask, *args, **kwargs) -> BaseModelOutputWithPooling:
        if self.config.classifier_pooling == "mean":  # reads the real tokens only: no padding states needed
            return BertForSequenceClassification._encode(self, input_ids, attention_mask, *args, **kwargs)
        return super()._encode(input_ids, attention_mask, *args, **kwargs)

    def _logits(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.classifier_pooling == "mean":
            return self._classify(mean_tokens(out, attention_mask))
        return self._classify(first_tokens(out))


class ModernBertForTokenClassification(PredictionHead, BertForTokenClassification):
    """head -> drop -> ``classifier`` (num_labels, H) on every token."""

    def _token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._classify(hidden)


class ModernBertForQuestionAnswering(PredictionHead, BertForQuestionAnswering):
    """head -> drop -> ``classifier`` (2, H) on every token: the start and end logits."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        del self.qa_outputs  # ModernBERT's span head is ``classifier``
        self.classifier = self._head(2)

    def _span_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._classify(hidden)


class ModernBertForMultipleChoice(PredictionHead, BertForMultipleChoice):
    """classifier_pooling ("cls": each sequence's first real token; "mean") -> head -> drop -> ``classifier``
    (1, H): one score per (context, choice) sequence."""

    def _scores(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.classifier_pooling == "mean":
            return self._classify(mean_tokens(out, attention_mask))
        return self._classify(first_real_tokens(out, attention_mask))
