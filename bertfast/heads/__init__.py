"""Heads on the encoder: pretraining (MLM, NSP) in ``heads.pretraining``; sequence / token classification, question
answering and multiple choice in ``heads.tasks``."""
from bertfast.heads.pretraining import BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining
from bertfast.heads.tasks import (BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification)

__all__ = ["BertForMaskedLM", "BertForMultipleChoice", "BertForNextSentencePrediction", "BertForPreTraining",
           "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification"]
