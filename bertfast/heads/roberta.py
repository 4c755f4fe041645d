"""RoBERTa's head models (also XLM-RoBERTa's and CamemBERT's, which transformers builds from the same code), with
transformers' names: the encoder under ``roberta.``, the MLM head ``lm_head`` (dense, GELU, layer_norm, the decoder
tied to the word embeddings), the sequence classification head ``classifier`` (dense, tanh, out_proj on the first
token, no pooler). Token classification, question answering and multiple choice are BERT's heads under
``roberta.``. The forward signatures, outputs and losses are BERT's (bertfast.heads)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast import ops
from bertfast.config import BertConfig
from bertfast.heads.pretraining import BertForMaskedLM
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification)
from bertfast.outputs import BaseModelOutputWithPooling
from bertfast.padding import PackedBatch

PREFIX = "roberta"  # transformers' RobertaPreTrainedModel.base_model_prefix (XLM-R's and CamemBERT's too)


class RobertaLMHead(nn.Module):
    """dense -> GELU (exact, whatever hidden_act says, as transformers) -> layer_norm -> decoder + bias. With tied
    embeddings the decoder weight is the word embedding matrix, passed in at call time (not stored twice)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                         bias=False)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (..., H) -> logits (..., vocab)."""
        hidden = ops.dense_gelu(hidden, self.dense.weight, self.dense.bias, "none")
        hidden = ops.layer_norm(hidden, self.layer_norm.weight, self.layer_norm.bias, self.layer_norm.eps)
        return F.linear(hidden, word_embeddings if self.decoder is None else self.decoder.weight, self.bias)


class RobertaClassificationHead(nn.Module):
    """The first token's state -> dropout -> dense -> tanh -> dropout -> out_proj: (B, H) -> (B, num_labels)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.head_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(first)))))


def first_tokens(out: BaseModelOutputWithPooling) -> torch.Tensor:
    """Each sequence's first token's state (B, H): position 0 of a padded (B, S, H) output, or the token at each
    ``cu_seqlens`` start of a packed (T, H) one."""
    hidden = out.last_hidden_state
    return hidden[:, 0] if out.cu_seqlens is None else hidden.index_select(0, out.cu_seqlens[:-1].long())


class RobertaForMaskedLM(BertForMaskedLM):
    base_model_prefix = PREFIX
    head_class = None

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.lm_head = RobertaLMHead(config)
        self.lm_head.apply(self._init_module)

    def mlm_logits(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """MLM logits for any selection of hidden states (..., H) -> (..., vocab)."""
        return self.lm_head(sequence_output, self.base_model.embeddings.word_embeddings.weight)


class RobertaForSequenceClassification(BertForSequenceClassification):
    """No pooler: ``classifier`` (RobertaClassificationHead) on the first token."""

    base_model_prefix = PREFIX
    add_pooling_layer = False
    head_output_weight = "classifier.out_proj.weight"

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.classifier = RobertaClassificationHead(config)
        self.classifier.apply(self._init_module)
        del self.dropout  # the head holds its dropout

    def _encode(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None, output_hidden_states: bool,
                output_attentions: bool, padding_states: bool = False) -> BaseModelOutputWithPooling:
        """A padded batch whose first position is padding in some row (left padding) keeps the padding states:
        the head reads position 0 whatever it holds, as transformers' does (one host sync, for such a mask; a
        traced graph keeps them always, having no branch on values)."""
        if isinstance(attention_mask, torch.Tensor) and (ops.exporting() or not bool(attention_mask[:, 0].all())):
            padding_states = True
        return super()._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                               output_attentions, padding_states)

    def _logits(self, out: BaseModelOutputWithPooling) -> torch.Tensor:
        return self.classifier(first_tokens(out))


class RobertaForTokenClassification(BertForTokenClassification):
    base_model_prefix = PREFIX


class RobertaForQuestionAnswering(BertForQuestionAnswering):
    base_model_prefix = PREFIX


class RobertaForMultipleChoice(BertForMultipleChoice):
    base_model_prefix = PREFIX
