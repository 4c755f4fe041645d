"""Task heads on the encoder, with transformers' attribute names, shapes and losses: sequence classification
(pooler -> dropout -> ``classifier``), token classification (dropout -> ``classifier`` on every token),
extractive question answering (``qa_outputs``: start and end logits) and multiple choice (pooler -> dropout ->
``classifier``: one score per choice).

Hidden states are zero at padding positions (see BertModel), so per-token logits there are the head's bias
alone: compare them over real tokens, and give padding positions the label IGNORE_INDEX (as collators do).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertfast import ops
from bertfast.config import BertConfig
from bertfast.heads.base import BertWithHeads
from bertfast.heads.pretraining import masked_lm_loss
from bertfast.inputs import check_inputs, check_integer_labels, check_real_labels
from bertfast.padding import PackedBatch
from bertfast.outputs import (BaseModelOutputWithPooling, MultipleChoiceModelOutput, QuestionAnsweringModelOutput,
                              SequenceClassifierOutput, TokenClassifierOutput)

# transformers infers single-label classification from labels of these dtypes (multi-label from any other)
CLASS_ID_DTYPES = (torch.int64, torch.int32)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (..., C) against class ids (...), IGNORE_INDEX ignored: MLM's loss, which
    is every classification head's."""
    return masked_lm_loss(logits, labels)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """transformers' loss for logits (B, num_labels) by ``config.problem_type``:

    - "single_label_classification": cross-entropy against class ids (B,);
    - "multi_label_classification": BCE with logits against 0/1 targets or probabilities (B, num_labels);
    - "regression": mean squared error against values (B, num_labels), or (B,) with one label.

    None picks one as transformers does: one label -> regression, int64/int32 labels -> single-label, other
    labels -> multi-label (the config is not changed).
    """
    num_labels = logits.shape[1]
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif isinstance(labels, torch.Tensor) and labels.dtype in CLASS_ID_DTYPES:
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "single_label_classification":
        return classification_loss(logits, labels)
    if problem_type == "regression" and num_labels == 1 and isinstance(labels, torch.Tensor) and labels.dim() == 1:
        labels = labels[:, None]  # (B, 1)
    check_real_labels(labels, logits.shape, "labels")
    if problem_type == "regression":
        return F.mse_loss(logits.float(), labels.float())
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def question_answering_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
                            end_positions: torch.Tensor) -> torch.Tensor:
    """(start cross-entropy + end cross-entropy) / 2 over logits (B, S), as transformers computes it: positions
    (B,) or (B, 1) are clamped to [0, S], and S (a position outside the sequence) is ignored.

    The softmax runs over all S positions, padding included, as in transformers; there the logits are the
    head's bias (zero hidden states), where transformers' come from the [PAD] tokens' hidden states, so the
    loss of a padded batch differs from transformers' by those terms. Without padding it is transformers'.
    """
    batch, seq_len = start_logits.shape
    losses = []
    for name, logits, positions in (("start_positions", start_logits, start_positions),
                                    ("end_positions", end_logits, end_positions)):
        if isinstance(positions, torch.Tensor) and positions.dim() > 1:
            positions = positions.squeeze(-1)  # (B,)
        check_integer_labels(positions, torch.Size([batch]), name)
        positions = positions.long().clamp(0, seq_len)
        losses.append(F.cross_entropy(logits.float(), positions, ignore_index=seq_len))
    return (losses[0] + losses[1]) / 2


def first_tokens(out: BaseModelOutputWithPooling) -> torch.Tensor:
    """Each sequence's first token's state (B, H): position 0 of a padded (B, S, H) output, or the token at each
    ``cu_seqlens`` start of a packed (T, H) one."""
    hidden = out.last_hidden_state
    return hidden[:, 0] if out.cu_seqlens is None else hidden.index_select(0, out.cu_seqlens[:-1].long())


class FirstTokenHead:
    """Mixin (listed before the head class) of the heads that read each sequence's first token instead of a pooler
    (RoBERTa's, DistilBERT's and ELECTRA's classifiers): a padded batch whose first position is padding in some row
    (left padding) keeps the padding states, so that the head reads position 0 whatever it holds, as
    transformers' does (one host sync, for such a mask; a traced graph keeps them always, having no branch on
    values)."""

    def _encode(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None, output_hidden_states: bool,
                output_attentions: bool, padding_states: bool = False) -> BaseModelOutputWithPooling:
        if isinstance(attention_mask, torch.Tensor) and (ops.exporting() or not bool(attention_mask[:, 0].all())):
            padding_states = True
        return super()._encode(input_ids, attention_mask, token_type_ids, position_ids,  # type: ignore[misc]
                               output_hidden_states, output_attentions, padding_states)


class BertForSequenceClassification(BertWithHeads):
    """pooler -> dropout -> ``classifier`` (num_labels, H): logits (B, num_labels)."""
    role = "ForSequenceClassification"

    add_pooling_layer = True
    new_head_prefixes = ("classifier.",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = self._head(config.num_labels)

    def _logits(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output -> logits (B, num_labels): BERT's head reads the pooler."""
        return self.classifier(self.dropout(out.pooler_output))

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        """input_ids (B, S) or a PackedBatch of B sequences -> logits (B, num_labels); ``loss`` by
        config.problem_type (see ``sequence_classification_loss``)."""
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        logits = self._logits(out, attention_mask)
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config.problem_type)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class FirstTokenClassification(FirstTokenHead, BertForSequenceClassification):
    """No pooler: ``classifier`` (a ``classifier_class``, which holds its own dropout: dense, an activation,
    out_proj) on each sequence's first token, RoBERTa's and ELECTRA's sequence classifiers."""

    add_pooling_layer = False
    head_output_weight = "classifier.out_proj.weight"
    classifier_class: type[nn.Module]  # built from the config: (B, H) -> (B, num_labels)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.classifier = self.classifier_class(config)
        self.classifier.apply(self._init_module)
        del self.dropout  # the head holds its dropout

    def _logits(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(first_tokens(out))


class BertForTokenClassification(BertWithHeads):
    """No pooler; dropout -> ``classifier`` (num_labels, H) on every token: logits (B, S, num_labels), packed
    (T, num_labels) for a PackedBatch."""
    role = "ForTokenClassification"

    add_pooling_layer = False
    new_head_prefixes = ("classifier.",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = self._head(config.num_labels)

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> TokenClassifierOutput:
        """input_ids (B, S) -> logits (B, S, num_labels), or a PackedBatch of T tokens -> (T, num_labels); ``loss``:
        cross-entropy against labels of the logits' leading shape, positions labelled IGNORE_INDEX ignored."""
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions)
        logits = self._token_logits(out.last_hidden_state)
        loss = None if labels is None else classification_loss(logits, labels)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)


    def _token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> logits (..., num_labels): BERT's head is dropout -> ``classifier``."""
        return self.classifier(self.dropout(hidden))


class BertForQuestionAnswering(BertWithHeads):
    """No pooler, no dropout; ``qa_outputs`` (2, H) on every token: start_logits and end_logits (B, S)."""
    role = "ForQuestionAnswering"

    add_pooling_layer = False
    new_head_prefixes = ("qa_outputs.",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"BertForQuestionAnswering's qa_outputs scores an answer's start and end: num_labels "
                             f"must be 2, got {config.num_labels}")
        self.num_labels = config.num_labels
        self.qa_outputs = self._head(2)

    def forward(self, input_ids: torch.Tensor | PackedBatch, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None) -> QuestionAnsweringModelOutput:
        """input_ids (B, S) -> start_logits, end_logits (B, S), or a PackedBatch of T tokens -> each (T,); ``loss``
        (``question_answering_loss``, padded batches only) when both start_positions and end_positions (B,) are
        given. transformers' loss takes its softmax over every position, padding included: with positions given,
        the encoder keeps the padding positions' states (the padded path) so the loss and the logits there are
        transformers'."""
        with_loss = start_positions is not None and end_positions is not None
        if with_loss and isinstance(input_ids, PackedBatch):
            raise ValueError("start_positions/end_positions take transformers' loss over each padded row: pass a "
                             "padded (B, S) batch, not a PackedBatch, with them")
        out = self._encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
                           output_attentions, padding_states=with_loss)
        logits = self._span_logits(out.last_hidden_state)  # (B, S, 2)
        start_logits, end_logits = (part.squeeze(-1).contiguous() for part in logits.split(1, dim=-1))  # (B, S)
        loss = None
        if with_loss:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)

    def _span_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> start and end logits (..., 2): BERT's head is ``qa_outputs`` alone."""
        return self.qa_outputs(hidden)


class BertForMultipleChoice(BertWithHeads):
    """Each (context, choice) sequence through the encoder; pooler -> dropout -> ``classifier`` (1, H): logits
    (B, num_choices)."""
    role = "ForMultipleChoice"

    add_pooling_layer = True
    new_head_prefixes = ("classifier.",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = self._head(1)

    def _head_size_source(self) -> str:
        return "one score per choice"

    def _scores(self, out: BaseModelOutputWithPooling, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output over the (B * num_choices) sequences -> one score each (B * num_choices, 1): BERT's
        head reads the pooler."""
        return self.classifier(self.dropout(out.pooler_output))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                labels: torch.Tensor | None = None) -> MultipleChoiceModelOutput:
        """input_ids, attention_mask, token_type_ids, position_ids (B, num_choices, S) -> logits (B, num_choices);
        ``loss``: cross-entropy against the right choice's index (B,). hidden_states and attentions are those of
        the (B * num_choices) sequences, as in transformers."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                  "position_ids": position_ids}
        batch, num_choices, seq_len = choices_shape(inputs)
        flat = {k: v.reshape(batch * num_choices, seq_len) if isinstance(v, torch.Tensor) else v
                for k, v in inputs.items()}  # each (B * num_choices, S)
        out = self._encode(flat["input_ids"], flat["attention_mask"], flat["token_type_ids"], flat["position_ids"],
                           output_hidden_states, output_attentions)
        logits = self._scores(out, flat["attention_mask"]).view(batch, num_choices)  # (B, num_choices)
        loss = None if labels is None else classification_loss(logits, labels)
        return MultipleChoiceModelOutput(loss, logits, out.hidden_states, out.attentions)


def choices_shape(inputs: dict[str, torch.Tensor | None]) -> torch.Size:
    """(B, num_choices, S) of multiple-choice inputs, every given one of that shape."""
    ids = inputs["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 3:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"BertForMultipleChoice takes input_ids of shape (batch, num_choices, sequence), got "
                         f"{shape}: tokenize each (context, choice) pair and stack the choices of each example")
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.shape != ids.shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has shape {tuple(ids.shape)}; "
                             f"every input of BertForMultipleChoice is (batch, num_choices, sequence)")
    return ids.shape


def check_choice_inputs(config: BertConfig, device: torch.device, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor | None = None,
                        token_type_ids: torch.Tensor | None = None) -> torch.Tensor | None:
    """``check_inputs`` for multiple-choice inputs (B, num_choices, S), for the runners that do not call the torch
    model (CUDA graphs, onnxruntime): the shapes, then the (B * num_choices, S) rows; -> the key padding mask
    (B, num_choices, S), or None without padding."""
    shape = choices_shape({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    rows = [t.reshape(-1, shape[-1]) if isinstance(t, torch.Tensor) else t
            for t in (input_ids, attention_mask, token_type_ids)]  # each (B * num_choices, S)
    mask = check_inputs(config, device, *rows)
    return None if mask is None else mask.view(shape)  # (B, num_choices, S)
