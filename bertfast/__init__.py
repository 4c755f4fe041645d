"""bertfast: a BERT inference runtime in PyTorch + Triton with transformers' numbers."""
from bertfast.config import BertConfig
from bertfast.export import ExportReport, ExportValidationError, export_onnx
from bertfast.heads import BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining
from bertfast.modeling import BertModel, BertPreTrainedModel
from bertfast.onnx_model import OnnxModel
from bertfast.pipelines import pipeline
from bertfast.tokenizer import BatchEncoding, BertTokenizer
from bertfast.triton_repo import write_triton_repository
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
    "ExportReport",
    "ExportValidationError",
    "OnnxModel",
    "export_onnx",
    "pipeline",
    "write_triton_repository",
]
