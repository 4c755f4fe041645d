"""bertfast: a BERT inference runtime in PyTorch + Triton with transformers' numbers."""
from bertfast.checkpoint import CheckpointError
from bertfast.config import BertConfig
from bertfast.export import ExportReport, ExportValidationError, OnnxModel, export_onnx, write_triton_repository
from bertfast.graphs import GraphedModel, optimize
from bertfast.heads import (BertForMaskedLM, BertForMultipleChoice, BertForNextSentencePrediction, BertForPreTraining,
                            BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification)
from bertfast.modeling import BertModel
from bertfast.pretrained import BertPreTrainedModel
from bertfast.cpu.int8 import quantize
from bertfast.pipelines import pipeline
from bertfast.serving import serve
from bertfast.training.pretraining import (PretrainingCollator, SentencePair, TokenMasker, create_nsp_pairs, read_documents,
                                           tokenize_documents)
from bertfast.encoding import BatchEncoding
from bertfast.tokenizer import BertTokenizer
from bertfast.training.finetune import FinetuneArguments, finetune
from bertfast.training.trainer import PretrainingArguments, Trainer, run_pretraining
from bertfast.version import __version__  # noqa: F401  (bertfast.__version__)


__all__ = [
    "BatchEncoding",
    "BertConfig",
    "BertForMaskedLM",
    "BertForMultipleChoice",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertPreTrainedModel",
    "BertTokenizer",
    "CheckpointError",
    "ExportReport",
    "ExportValidationError",
    "GraphedModel",
    "OnnxModel",
    "FinetuneArguments",
    "PretrainingArguments",
    "PretrainingCollator",
    "SentencePair",
    "TokenMasker",
    "Trainer",
    "create_nsp_pairs",
    "export_onnx",
    "optimize",
    "pipeline",
    "quantize",
    "read_documents",
    "finetune",
    "run_pretraining",
    "serve",
    "tokenize_documents",
    "write_triton_repository",
]
