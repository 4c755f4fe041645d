"""THE task table: one typed entry (``TaskSpec``) per task, transformers' ``SUPPORTED_TASKS`` style.

An entry holds every fact of its task: name and aliases, model class and head prefix, its pipeline, its export
(output class and dims), its serving contract (tensors; the behaviour stays in ``bertfast.serving.contract``), what
``bertfast bench --task`` compares, fine-tuning (data, best metric, PEFT type) and its CLI subcommand. The registries
of the apps (``bertfast.pipelines.PIPELINES``, ``bertfast.export.onnx_model.EXPORT_TASKS``,
``bertfast.serving.contract.CONTRACTS``, bench's ``TASKS``, finetune's ``TASKS``; lora and the metrics read the
entries) are lookups of this table, and the CLI's task subcommands are generated from it. Adding a task is one
entry here plus its pipeline module.

Layer: just above the heads. Code of the app layer (pipelines, serving, training, the CLI) is named by
``"module:attr"`` strings and imported by the app that needs it (``load``), so this module imports no app.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from bertfast.config import BertConfig
from bertfast.heads import (BertForMaskedLM, BertForMultipleChoice, BertForNextSentencePrediction, BertForPreTraining,
                            BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification)
from bertfast.models.bert import BertModel
from bertfast.outputs import (BaseModelOutputWithPooling, BertForPreTrainingOutput, MaskedLMOutput, ModelOutput,
                              MultipleChoiceModelOutput, NextSentencePredictorOutput, QuestionAnsweringModelOutput,
                              SequenceClassifierOutput, TokenClassifierOutput)
from bertfast.pretrained import BertPreTrainedModel

SEQUENCE_INPUTS = ("batch_size", "sequence_length")  # the dynamic axes of every exported input, by name
CHOICE_INPUTS = ("batch_size", "num_choices", "sequence_length")  # ... of a multiple-choice model's


def load(target: str) -> Any:
    """``"package.module:attr"`` -> that attribute, imported now (how the apps resolve the table's strings)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ExportSpec:
    """What the export of a task (``export_onnx(task=...)``) traces and returns."""

    output_class: type[ModelOutput]  # the dataclass OnnxModel returns, as the torch model does
    # output name -> dims after the batch axis: names in ``inputs`` are dynamic, other strings are config fields
    outputs: dict[str, tuple[str | int, ...]]
    inputs: tuple[str, ...] = SEQUENCE_INPUTS  # the dynamic axes of input_ids, attention_mask, token_type_ids


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served task, per batch row."""

    name: str
    data_type: str  # a Triton config type: a key of bertfast.serving.contract.NUMPY_TYPES
    dims: tuple[int | str, ...]  # per-row dims; a str names the BertConfig field that gives the size
    doc: str  # what a row holds: written into the model config's parameters and the README
    optional: bool = False  # an input a request may leave out

    def resolved_dims(self, config: BertConfig) -> list[int]:
        return [getattr(config, d) if isinstance(d, str) else d for d in self.dims]


@dataclass(frozen=True)
class ServingSpec:
    """A served task's tensors and the ``"module:function"`` names of its behaviour (``bertfast.serving.contract``)."""

    inputs: tuple[TensorSpec, ...]  # the first one or two are tokenized together (text, text pair)
    outputs: tuple[TensorSpec, ...]
    run: str  # (pipeline, rows: {input: [text]}) -> {output: (N, *dims)}
    check: str | None = None  # (pipeline, one row's texts, its token ids) -> None; a ValueError refuses the request
    windowed: bool = False  # the pipeline runs a text over max_length tokens in windows, so a row may be longer


@dataclass(frozen=True)
class FinetuneSpec:
    """How ``bertfast finetune --task`` trains and evaluates the task."""

    data: str  # (args, tokenizer, training rows) -> (data object, label names or None)
    reader: str  # path -> rows (or SQuAD examples)
    scores: str  # (outputs, labels, data, features, rows, args) -> metrics: bertfast.training.metrics
    max_length: int  # tokens per example (per window) when --max-length is not given
    peft_task_type: str  # PEFT's ``task_type`` of an adapter trained for this task
    best_metric: str | None = None  # the metric that picks the best epoch; None: by --problem-type
    problem_types: bool = False  # --problem-type applies (config.problem_type is set from it)


@dataclass(frozen=True)
class CliSpec:
    """The task's ``bertfast`` subcommand; the task name and its aliases are the subcommand's aliases."""

    command: str  # today's subcommand name
    help: str
    setup: str  # (subparser) -> None: adds its arguments and the handler (bertfast.cli.tasks)


@dataclass(frozen=True)
class TaskSpec:
    """One task: every registry's facts about it (``None`` where the task has no such part)."""

    name: str  # the bertfast.pipeline / export / serve / bench / finetune task name
    model_class: type[BertPreTrainedModel]  # the bertfast class loaded from a checkpoint for this task
    head_prefix: str | None  # the state-dict prefix of its head ("classifier."); None: the encoder alone
    aliases: tuple[str, ...] = ()  # transformers' other names of the task
    pipeline: str | None = None  # "module:Class" of its bertfast.pipeline
    onnx_task: str | None = None  # the export a pipeline of this task runs on onnxruntime (default: its own)
    export: ExportSpec | None = None  # its own export_onnx task
    serving: ServingSpec | None = None
    bench: tuple[str, ...] | None = None  # bench --task: the output fields compared and timed
    finetune: FinetuneSpec | None = None
    cli: CliSpec | None = None
    # a sentence-transformers folder of this model type runs this task: (its model type, the graph output it starts from)
    sentence: tuple[str, str] | None = None
    corpus_bench: bool = False  # bench --task NAME embeds a corpus (bertfast.bench.corpus) instead of the grid

    @property
    def head(self) -> str | None:
        """The head module's name ("classifier"), e.g. what LoRA trains whole."""
        return None if self.head_prefix is None else self.head_prefix.rstrip(".")

    @property
    def export_task(self) -> str:
        """The export task whose graph this task runs with backend="onnxruntime"."""
        return self.onnx_task or self.name

    @property
    def cli_aliases(self) -> tuple[str, ...]:
        """The task name and aliases that are not already the subcommand's name."""
        return tuple(n for n in (self.name, *self.aliases) if self.cli is not None and n != self.cli.command)

    def output_dims(self, name: str, config: BertConfig, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Concrete shape of export output ``name`` for an input of ``input_shape``, e.g. logits (B, S, vocab)."""
        export = self._exported()
        sizes = dict(zip(export.inputs, input_shape))  # e.g. {"batch_size": 3, "sequence_length": 7}
        return (sizes["batch_size"], *(sizes[d] if d in sizes else getattr(config, d) if isinstance(d, str) else d
                                       for d in export.outputs[name]))

    def _exported(self) -> ExportSpec:
        if self.export is None:
            raise ValueError(f"task {self.name!r} has no export of its own; exported tasks: {sorted(EXPORT_NAMES)}")
        return self.export


_TEXT = TensorSpec("text", "TYPE_STRING", (1,), "one UTF-8 text per row")
_EMBEDDING = TensorSpec("embedding", "TYPE_FP32", ("hidden_size",), "the sentence embedding (the pipeline's pooling)")
SERVED_AGGREGATION = "simple"  # token-classification's entities: adjacent tokens of one entity grouped
_CONTRACT = "bertfast.serving.contract:"
_DATA = "bertfast.training.finetune:"
_ROWS = "bertfast.training.finetune_data:read_rows"
_METRICS = "bertfast.training.metrics:"
_CLI = "bertfast.cli.tasks:"
_PIPELINES = "bertfast.pipelines."
_EMBEDDING_PIPELINE = _PIPELINES + "feature_extraction:FeatureExtractionPipeline"
_LOGITS = {"logits": ("num_labels",)}

TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("fill-mask", BertForMaskedLM, "cls.", pipeline=_PIPELINES + "fill_mask:FillMaskPipeline",
             export=ExportSpec(MaskedLMOutput, {"logits": ("sequence_length", "vocab_size")}),
             serving=ServingSpec((TensorSpec("text", "TYPE_STRING", (1,), "one UTF-8 text with [MASK] per row"),), (
                 TensorSpec("result", "TYPE_STRING", (1,), "JSON: the top-5 [{score, token, token_str, sequence}], a "
                                                           "list of such lists when the text holds several [MASK]s"),),
                 _CONTRACT + "json_result", _CONTRACT + "has_mask"),
             cli=CliSpec("fill-mask", "predict the [MASK] token(s) of a text", _CLI + "fill_mask")),
    TaskSpec("next-sentence", BertForNextSentencePrediction, "cls.",
             pipeline=_PIPELINES + "next_sentence:NextSentencePipeline",
             export=ExportSpec(NextSentencePredictorOutput, {"logits": (2,)}),
             serving=ServingSpec((_TEXT, TensorSpec("text_pair", "TYPE_STRING", (1,), "the text that may follow")), (
                 TensorSpec("logits", "TYPE_FP32", (2,), "[is_next, not_next] logits"),
                 TensorSpec("is_next_probability", "TYPE_FP32", (1,), "P(text_pair follows text)"),
                 TensorSpec("label", "TYPE_STRING", (1,), "IsNext or NotNext")), _CONTRACT + "next_sentence"),
             cli=CliSpec("nsp", "probability that TEXT_B follows TEXT_A (next-sentence prediction)", _CLI + "nsp")),
    TaskSpec("feature-extraction", BertModel, None, pipeline=_EMBEDDING_PIPELINE,
             export=ExportSpec(BaseModelOutputWithPooling, {"last_hidden_state": ("sequence_length", "hidden_size"),
                                                            "pooler_output": ("hidden_size",)}),
             serving=ServingSpec((_TEXT,), (_EMBEDDING,), _CONTRACT + "embedding"), bench=("last_hidden_state",),
             cli=CliSpec("embed", "sentence embeddings, as the Python feature-extraction pipeline gives them",
                         _CLI + "embed")),
    TaskSpec("sentence-embedding", BertModel, None, pipeline=_EMBEDDING_PIPELINE,
             onnx_task="feature-extraction", serving=ServingSpec((_TEXT,), (_EMBEDDING,), _CONTRACT + "embedding"),
             sentence=("SentenceTransformer", "last_hidden_state"), corpus_bench=True),
    TaskSpec("sparse-embedding", BertForMaskedLM, "cls.",
             pipeline=_PIPELINES + "sparse_embedding:SparseEmbeddingPipeline", onnx_task="fill-mask",
             serving=ServingSpec((_TEXT,), (TensorSpec(
                 "result", "TYPE_STRING", (1,), "JSON: [{index, value}], the token ids of non-zero weight and their "
                                                "weights, largest first"),), _CONTRACT + "json_result"),
             sentence=("SparseEncoder", "logits")),
    TaskSpec("pretraining", BertForPreTraining, "cls.",
             export=ExportSpec(BertForPreTrainingOutput, {"prediction_logits": ("sequence_length", "vocab_size"),
                                                          "seq_relationship_logits": (2,)})),
    TaskSpec("text-classification", BertForSequenceClassification, "classifier.", aliases=("sentiment-analysis",),
             pipeline=_PIPELINES + "text_classification:TextClassificationPipeline",
             export=ExportSpec(SequenceClassifierOutput, _LOGITS),
             serving=ServingSpec((_TEXT, TensorSpec("text_pair", "TYPE_STRING", (1,),
                                                    "optional: the second text of a pair", optional=True)), (
                 TensorSpec("scores", "TYPE_FP32", ("num_labels",), "every label's score in label-id order (the "
                                                                   "pipeline's function: softmax, sigmoid or none)"),
                 TensorSpec("result", "TYPE_STRING", (1,), "JSON: {label, score}, the best label")),
                 _CONTRACT + "text_classification"),
             bench=("logits",),
             finetune=FinetuneSpec(_DATA + "text_classification_data", _ROWS,
                                   _METRICS + "text_classification_scores", 128, "SEQ_CLS", problem_types=True),
             cli=CliSpec("classify", "labels of texts (or text pairs) from a sequence-classification model",
                         _CLI + "classify")),
    TaskSpec("token-classification", BertForTokenClassification, "classifier.", aliases=("ner",),
             pipeline=_PIPELINES + "token_classification:TokenClassificationPipeline",
             export=ExportSpec(TokenClassifierOutput, {"logits": ("sequence_length", "num_labels")}),
             serving=ServingSpec((_TEXT,), (TensorSpec(
                 "result", "TYPE_STRING", (1,), "JSON: [{entity_group, score, word, start, end}] (aggregation "
                                                f"{SERVED_AGGREGATION!r}; start/end are character offsets)"),),
                 _CONTRACT + "token_classification", windowed=True),
             bench=("logits",),
             finetune=FinetuneSpec(_DATA + "token_classification_data", _ROWS,
                                   _METRICS + "token_classification_scores", 128, "TOKEN_CLS", best_metric="f1"),
             cli=CliSpec("ner", "entities of a text from a token-classification model, with character offsets",
                         _CLI + "ner")),
    TaskSpec("rerank", BertForSequenceClassification, "classifier.", pipeline=_PIPELINES + "rerank:RerankPipeline",
             onnx_task="text-classification",
             serving=ServingSpec((TensorSpec("query", "TYPE_STRING", (1,), "the query of the row's pair"),
                                  TensorSpec("document", "TYPE_STRING", (1,), "the document scored against it")), (
                 TensorSpec("score", "TYPE_FP32", (1,), "the cross-encoder's score of (query, document), the "
                                                        "pipeline's function applied"),), _CONTRACT + "rerank"),
             cli=CliSpec("rerank", "documents sorted by a cross-encoder's score against a query", _CLI + "rerank")),
    TaskSpec("question-answering", BertForQuestionAnswering, "qa_outputs.",
             pipeline=_PIPELINES + "question_answering:QuestionAnsweringPipeline",
             export=ExportSpec(QuestionAnsweringModelOutput, {"start_logits": ("sequence_length",),
                                                              "end_logits": ("sequence_length",)}),
             serving=ServingSpec((TensorSpec("question", "TYPE_STRING", (1,), "one UTF-8 question per row"),
                                  TensorSpec("context", "TYPE_STRING", (1,),
                                             "the text that holds the answer (long ones run in windows)")),
                                 (TensorSpec("result", "TYPE_STRING", (1,), "JSON: {score, start, end, answer}, "
                                                                            "answer == context[start:end]"),),
                                 _CONTRACT + "question_answering", _CONTRACT + "question_fits", windowed=True),
             bench=("start_logits", "end_logits"),
             finetune=FinetuneSpec(_DATA + "question_answering_data", "bertfast.training.qa_data:read_squad",
                                   _METRICS + "question_answering_scores", 384, "QUESTION_ANS", best_metric="f1"),
             cli=CliSpec("qa", "extractive question answering: the span of CONTEXT that answers QUESTION",
                         _CLI + "qa")),
    TaskSpec("multiple-choice", BertForMultipleChoice, "classifier.",
             export=ExportSpec(MultipleChoiceModelOutput, {"logits": ("num_choices",)}, CHOICE_INPUTS),
             bench=("logits",)),
)
BY_NAME: dict[str, TaskSpec] = {spec.name: spec for spec in TASKS}
ALIASES: dict[str, str] = {alias: spec.name for spec in TASKS for alias in spec.aliases}  # transformers' names
EXPORT_NAMES = tuple(spec.name for spec in TASKS if spec.export is not None)
DEFAULT_EXPORT_TASK = "feature-extraction"  # export-onnx / export_onnx without --task, and bench --task
DEFAULT_FINETUNE_TASK = "text-classification"


def task_names(part: str | None = None) -> list[str]:
    """The tasks, in table order, that have ``part`` (a TaskSpec field such as "pipeline", "export", "finetune")."""
    return [spec.name for spec in TASKS if part is None or getattr(spec, part) is not None]


def get_task(name: str, part: str | None = None) -> TaskSpec:
    """The entry of a task name or alias that has ``part``; else one ValueError naming the ones that do."""
    spec = BY_NAME.get(ALIASES.get(name, name))
    if spec is None or (part is not None and getattr(spec, part) is None):
        available = task_names(part)
        aliases = [alias for alias, task in ALIASES.items() if task in available]
        raise ValueError(f"unknown task {name!r}; available: {sorted([*available, *aliases])}")
    return spec
