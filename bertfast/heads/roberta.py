"""RoBERTa's head models (also XLM-RoBERTa's and CamemBERT's, which transformers builds from the same code), with
transformers' names: the encoder under ``roberta.``, the MLM head ``lm_head`` (dense, GELU, layer_norm, the decoder
tied to the word embeddings), the sequence classification head ``classifier`` (dense, tanh, out_proj on the first
token, no pooler). Token classification, question answering and multiple choice are BERT's heads under
``roberta.``. The forward signatures, outputs and losses are BERT's (bertfast.heads)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast.config import BertConfig
from bertfast.heads.pretraining import BertForMaskedLM, dense_gelu_norm
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForTokenClassification,
                                  FirstTokenClassification)

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
        hidden = dense_gelu_norm(hidden, self.dense, self.layer_norm, "none")
        return F.linear(hidden, word_embeddings if self.decoder is None else self.decoder.weight, self.bias)


class RobertaClassificationHead(nn.Module):
    """The first token's state -> dropout -> dense -> tanh -> dropout -> out_proj: (B, H) -> (B, num_labels)."""

    activation = staticmethod(torch.tanh)  # ELECTRA's head is this one with GELU (bertfast.heads.electra)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.head_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.activation(self.dense(self.dropout(first)))))


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


class RobertaForSequenceClassification(FirstTokenClassification):
    """No pooler: ``classifier`` (RobertaClassificationHead) on the first token."""

    base_model_prefix = PREFIX
    classifier_class = RobertaClassificationHead


class RobertaForTokenClassification(BertForTokenClassification):
    base_model_prefix = PREFIX


class RobertaForQuestionAnswering(BertForQuestionAnswering):
    base_model_prefix = PREFIX


class RobertaForMultipleChoice(BertForMultipleChoice):
    base_model_prefix = PREFIX
