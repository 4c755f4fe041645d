"""Output dataclasses with transformers' field names.

Like transformers' ``ModelOutput``: attribute access, ``out["name"]``, ``out[0]`` over the fields that
are not None, ``keys()`` and ``to_tuple()``. Tensor fields carry their leading axes as field metadata
(``axes_of``): what a wrapper that pads inputs (bertfast.graphs) slices back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

BATCH = ("batch",)  # the default: (B, ...)
PER_TOKEN = ("batch", "sequence")  # (B, S, ...)
PER_CHOICE = ("batch", "choice")  # (B, num_choices)


def _with_axes(axes: tuple[str, ...], **kwargs: Any) -> Any:
    return field(metadata={"axes": axes}, **kwargs)


def axes_of(f: dataclasses.Field) -> tuple[str, ...]:
    """The leading axes of an output field's tensor: "batch", then "sequence" or "choice" where it has one."""
    return f.metadata.get("axes", BATCH)


class ModelOutput:
    def _present(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def keys(self) -> list[str]:
        return list(self._present())

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self._present().values())

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return self._present()[key]
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self._present()


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor = _with_axes(PER_TOKEN)  # (B, S, H)
    pooler_output: torch.Tensor | None = None  # (B, H), None without a pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + every layer, each (B, S, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # one (B, heads, S, S) per layer
    # only with return_packed=True, where the hidden states are (T, H) real tokens:
    cu_seqlens: torch.Tensor | None = None  # (B + 1,) int32 cumulative real-token counts, starting at 0
    max_seqlen: int | None = None  # the longest sequence's real-token count


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # scalar MLM cross-entropy over labels != -100
    logits: torch.Tensor | None = _with_axes(PER_TOKEN, default=None)  # (B, S, vocab)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class NextSentencePredictorOutput(ModelOutput):
    loss: torch.Tensor | None = None  # scalar NSP cross-entropy
    logits: torch.Tensor | None = None  # (B, 2); index 0 = "B follows A"
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class BertForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # MLM + NSP, only when both label kinds are given (as transformers)
    prediction_logits: torch.Tensor | None = _with_axes(PER_TOKEN, default=None)  # (B, S, vocab)
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None  # scalar, by config.problem_type (cross-entropy, BCE with logits or MSE)
    logits: torch.Tensor | None = None  # (B, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None  # scalar cross-entropy over labels != -100
    logits: torch.Tensor | None = _with_axes(PER_TOKEN, default=None)  # (B, S, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None  # (start cross-entropy + end cross-entropy) / 2
    start_logits: torch.Tensor | None = _with_axes(PER_TOKEN, default=None)  # (B, S): the answer starts here
    end_logits: torch.Tensor | None = _with_axes(PER_TOKEN, default=None)  # (B, S): ... and ends here
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    loss: torch.Tensor | None = None  # scalar cross-entropy over the choices
    logits: torch.Tensor | None = _with_axes(PER_CHOICE, default=None)  # (B, num_choices)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # each (B * num_choices, S, H), as transformers
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class ElectraForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # BCE with logits over the real tokens (ELECTRA's replaced-token detection)
    logits: torch.Tensor | None = _with_axes(PER_TOKEN, default=None)  # (B, S): > 0 = the token was replaced
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
