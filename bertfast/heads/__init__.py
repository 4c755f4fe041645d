"""Heads on the encoder: pretraining (MLM, NSP) in ``heads.pretraining``."""
from bertfast.heads.pretraining import BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining

__all__ = ["BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining"]
