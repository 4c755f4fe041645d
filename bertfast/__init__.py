"""bertfast: a BERT inference runtime in PyTorch + Triton with transformers' numbers."""
from bertfast.config import BertConfig
from bertfast.graphs import GraphedModel, optimize
from bertfast.heads import BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining
from bertfast.modeling import BertModel, BertPreTrainedModel
from bertfast.pipelines import pipeline
from bertfast.tokenizer import BatchEncoding, BertTokenizer
from bertfast.weights import CheckpointError

__version__ = "0.1.0"

__all__ = [
    "BatchEncoding",
    "BertConfig",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertModel",
    "BertPreTrainedModel",
    "BertTokenizer",
    "CheckpointError",
    "GraphedModel",
    "optimize",
    "pipeline",
]
