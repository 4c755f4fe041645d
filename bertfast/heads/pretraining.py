"""MLM and NSP heads and the models that carry them, with transformers' names and losses."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast import ops
from bertfast.config import BertConfig
from bertfast.inputs import IGNORE_INDEX, check_labels
from bertfast.heads.base import BertWithHeads
from bertfast.padding import PackedBatch
from bertfast.outputs import BertForPreTrainingOutput, MaskedLMOutput, NextSentencePredictorOutput


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of MLM logits (..., vocab) over the labels (...) that are not IGNORE_INDEX."""
    vocab_size = logits.shape[-1]
    check_labels(labels, logits.shape[:-1], vocab_size, "labels")
    return F.cross_entropy(logits.reshape(-1, vocab_size).float(), labels.reshape(-1).long(),
                           ignore_index=IGNORE_INDEX)


def next_sentence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of NSP logits (B, 2) against next_sentence_label (B,): 0 = IsNext, 1 = NotNext."""
    check_labels(labels, logits.shape[:1], 2, "next_sentence_label")
    return F.cross_entropy(logits.view(-1, 2).float(), labels.view(-1))


def dense_gelu_norm(hidden: torch.Tensor, dense: nn.Linear, norm: nn.LayerNorm, approximate: str) -> torch.Tensor:
    """LayerNorm(gelu(dense(hidden))), (..., in) -> (..., out): the transform before an MLM decoder (BERT's,
    RoBERTa's, DistilBERT's, ELECTRA's generator's); ``approximate`` "none" | "tanh"."""
    hidden = ops.dense_gelu(hidden, dense.weight, dense.bias, approximate)
    return ops.layer_norm(hidden, norm.weight, norm.bias, norm.eps)


class OutputBias(nn.Module):
    """A tied decoder's one parameter, its ``bias`` (vocab,): the weight is the word embedding matrix, passed in
    at call time (``decode``), so that the module saves as ``<name>.bias`` alone, as transformers saves a Linear
    tied to the embeddings."""

    def __init__(self, vocab_size: int, bias: bool = True):
        super().__init__()
        self.register_parameter("bias", nn.Parameter(torch.zeros(vocab_size)) if bias else None)


def vocabulary_decoder(width: int, vocab_size: int, tied: bool, bias: bool = True) -> nn.Module:
    """A decoder (vocab, width), with a bias unless ``bias`` is False: an ``OutputBias`` when tied to the word
    embeddings (no parameter at all without a bias), else a Linear."""
    return OutputBias(vocab_size, bias) if tied else nn.Linear(width, vocab_size, bias=bias)


def decode(hidden: torch.Tensor, decoder: nn.Module, word_embeddings: torch.Tensor) -> torch.Tensor:
    """hidden (..., width) -> logits (..., vocab) through a ``vocabulary_decoder``."""
    weight = getattr(decoder, "weight", None)
    return F.linear(hidden, word_embeddings if weight is None else weight, decoder.bias)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.approximate = config.gelu_approximate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return dense_gelu_norm(hidden, self.dense, self.LayerNorm, self.approximate)


class BertLMPredictionHead(nn.Module):
    """transform -> decoder. With tied embeddings (the default) the decoder weight is the word embedding
    matrix, passed in at call time, so it is neither stored twice nor saved twice."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                         bias=False)

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (..., H) -> logits (..., vocab)."""
        weight = word_embeddings if self.decoder is None else self.decoder.weight
        return F.linear(self.transform(hidden), weight, self.bias)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def mlm_logits(self: BertWithHeads, sequence_output: torch.Tensor) -> torch.Tensor:
    """MLM logits for any selection of hidden states (..., H) -> (..., vocab), the method of the models with a
    ``cls.predictions`` head; fill-mask uses it on masked positions only."""
    return self.cls.predictions(sequence_output, self.base_model.embeddings.word_embeddings.weight)


class BertForMaskedLM(BertWithHeads):
    role = "ForMaskedLM"
    head_class = BertOnlyMLMHead
    add_pooling_layer = False
    mlm_logits = mlm_logits

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> MaskedLMOutput:
        """logits (B, S, vocab), packed (T, vocab) for a PackedBatch; loss = cross-entropy over positions whose
        label is not IGNORE_INDEX."""
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        logits = self.mlm_logits(out.last_hidden_state)
        loss = None if labels is None else masked_lm_loss(logits, labels)
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


class BertForNextSentencePrediction(BertWithHeads):
    role = "ForNextSentencePrediction"
    head_class = BertOnlyNSPHead
    add_pooling_layer = True

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> NextSentencePredictorOutput:
        """logits (B, 2), padded or packed input: index 0 = "B follows A" (IsNext), 1 = "B is random" (NotNext)."""
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        logits = self.cls.seq_relationship(out.pooler_output)
        loss = None if labels is None else next_sentence_loss(logits, labels)
        return NextSentencePredictorOutput(loss, logits, out.hidden_states, out.attentions)


class BertForPreTraining(BertWithHeads):
    role = "ForPreTraining"
    head_class = BertPreTrainingHeads
    add_pooling_layer = True
    mlm_logits = mlm_logits

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None) -> BertForPreTrainingOutput:
        """prediction_logits (B, S, vocab) (packed (T, vocab) for a PackedBatch), seq_relationship_logits (B, 2).

        ``loss`` = MLM + NSP cross-entropy, returned (as in transformers) only when both ``labels`` and
        ``next_sentence_label`` are given.
        """
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        prediction_logits = self.mlm_logits(out.last_hidden_state)
        nsp_logits = self.cls.seq_relationship(out.pooler_output)
        loss = None
        if labels is not None and next_sentence_label is not None:
            loss = masked_lm_loss(prediction_logits, labels) + next_sentence_loss(nsp_logits, next_sentence_label)
        return BertForPreTrainingOutput(loss, prediction_logits, nsp_logits, out.hidden_states, out.attentions)
