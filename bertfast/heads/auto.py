"""The Auto classes, as transformers has them: ``AutoModelFor<X>.from_pretrained(folder)`` loads the class of the
folder's architecture (config.json's ``model_type``, bertfast.models) for role ``For<X>``: RobertaForMaskedLM for a
RoBERTa folder, BertForMaskedLM for a BERT one. bertfast's ``Bert*`` classes pick the same way; these are the names
transformers users write."""
from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from bertfast.heads.pretraining import BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification)
from bertfast.models.bert import BertModel
from bertfast.pretrained import BertPreTrainedModel


class _AutoModel:
    """``from_pretrained`` / ``from_hf`` of the architecture's class for ``bert_class``'s role."""

    bert_class: type[BertPreTrainedModel]

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(folder)")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> BertPreTrainedModel:
        """The checkpoint's model for this role; ``kwargs`` as ``BertPreTrainedModel.from_pretrained``'s."""
        return cls.bert_class.from_pretrained(name_or_path, **kwargs)

    @classmethod
    def from_hf(cls, hf_model: nn.Module, **kwargs: Any) -> BertPreTrainedModel:
        """An in-memory transformers model converted (its architecture's class for this role)."""
        return cls.bert_class.from_hf(hf_model, **kwargs)


def _auto(bert_class: type[BertPreTrainedModel]) -> type[_AutoModel]:
    name = "AutoModel" + bert_class.role.removeprefix("Model")
    return type(name, (_AutoModel,), {"bert_class": bert_class, "__doc__": f"{name}: see bertfast.heads.auto.",
                                      "__module__": __name__})


AutoModel = _auto(BertModel)
AutoModelForMaskedLM = _auto(BertForMaskedLM)
AutoModelForNextSentencePrediction = _auto(BertForNextSentencePrediction)
AutoModelForPreTraining = _auto(BertForPreTraining)
AutoModelForSequenceClassification = _auto(BertForSequenceClassification)
AutoModelForTokenClassification = _auto(BertForTokenClassification)
AutoModelForQuestionAnswering = _auto(BertForQuestionAnswering)
AutoModelForMultipleChoice = _auto(BertForMultipleChoice)
