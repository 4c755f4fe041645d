"""bertfast: a BERT inference runtime in PyTorch + Triton with transformers' numbers.

The package is lazy (PEP 562): ``import bertfast`` loads no module until one of its names is used, so importing
the runtime loads no training, serving, export or bench module. ``bertfast.X`` imports X's module on first use
(``_LAZY`` says which); ``bertfast.<submodule>`` imports that submodule."""
from __future__ import annotations

import importlib
from typing import Any

from bertfast.version import __version__  # noqa: F401  (bertfast.__version__)

_LAZY: dict[str, str] = {  # public name -> the module that defines it
    **dict.fromkeys(("AutoModel", "AutoModelForMaskedLM", "AutoModelForMultipleChoice",
                     "AutoModelForNextSentencePrediction", "AutoModelForPreTraining", "AutoModelForQuestionAnswering",
                     "AutoModelForSequenceClassification", "AutoModelForTokenClassification"), "bertfast.heads.auto"),
    "AutoTokenizer": "bertfast.auto_tokenizer",
    "BatchEncoding": "bertfast.encoding",
    "BertConfig": "bertfast.config",
    **dict.fromkeys(("BertForMaskedLM", "BertForMultipleChoice", "BertForNextSentencePrediction", "BertForPreTraining",
                     "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification"),
                    "bertfast.heads"),
    "BertModel": "bertfast.models.bert",
    "BertPreTrainedModel": "bertfast.pretrained",
    "BertTokenizer": "bertfast.tokenizer",
    "CheckpointError": "bertfast.checkpoint",
    **dict.fromkeys(("ExportReport", "ExportValidationError", "export_onnx"), "bertfast.export.onnx"),
    **dict.fromkeys(("GraphedModel", "optimize"), "bertfast.graphs"),
    "OnnxModel": "bertfast.export.onnx_model",
    "PackedBatch": "bertfast.padding",
    "PreTrainedTokenizerFast": "bertfast.fast_tokenizer",
    **dict.fromkeys(("FinetuneArguments", "finetune"), "bertfast.training.finetune"),
    **dict.fromkeys(("PretrainingArguments", "Trainer", "run_pretraining"), "bertfast.training.trainer"),
    **dict.fromkeys(("PretrainingCollator", "SentencePair", "TokenMasker", "create_nsp_pairs", "read_documents",
                     "tokenize_documents"), "bertfast.training.pretraining"),
    "pipeline": "bertfast.pipelines",
    "quantize": "bertfast.cpu.int8",
    "serve": "bertfast.serving.server",
    "write_triton_repository": "bertfast.serving.repository",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """A public name from its module (kept here after the first use), or a submodule of the package."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name.startswith("__"):  # an interpreter probe (__wrapped__, __file__ of a frozen build...): no submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
