"""ONNX export for serving: trace, validate against PyTorch with onnxruntime, optionally optimize and convert
to float16, and write the export's folder (``bertfast.export.validation`` holds the checks and their tolerances).

Exporter: ``torch.onnx.export(..., dynamo=True)``, the exporter torch 2.13 recommends and uses by default. It
captures the model with ``torch.export`` (non-strict) and translates it with onnxscript; the batch and
sequence axes (and multiple-choice's choices axis) are ``torch.export.Dim``s named ``batch_size`` /
``sequence_length`` (sequence bounded by ``max_position_embeddings``) / ``num_choices``, so no dimension is
frozen to the traced example. The TorchScript exporter is not needed and not used. While tracing,
``torch.onnx.is_in_onnx_export()`` and ``torch.compiler.is_exporting()`` are true, so ``ops.backend_for`` picks
the torch reference of every op (never a Triton kernel) and ``check_inputs`` skips its data-dependent value
checks.

Opsets: 17 (LayerNormalization) up to what the installed onnx knows; None = the exporter's default (20).
At opset 23 and above the exporter emits the ONNX ``Attention`` op, which onnxruntime 1.31's CPU kernel
rejects with our (B, 1, 1, S) padding mask: validation then fails loudly.

"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from bertfast import ops
from bertfast.atomic import check_out_dir as atomic_check_out_dir, replacing_directory
from bertfast.cpu.gemm import plain_linear
from bertfast.pretrained import BertPreTrainedModel
from bertfast.export.int8 import MIN_COSINE, compare_int8, quantize_onnx
from bertfast.export.onnx_model import INPUT_NAMES, ONNX_FILE, check_task
from bertfast.export.sentence import FOLDER_FILES, module_folders, sentence_files
from bertfast.export.validation import TOP_K, ExportValidationError, check_top_k, compare, run_graph, tolerance
from bertfast.hub import resolve_file
from bertfast.inputs import random_batch
from bertfast.tasks import DEFAULT_EXPORT_TASK, TaskSpec
from bertfast.tokenizer_files import TOKENIZER_FILES
from bertfast.version import __version__

MIN_OPSET = 17  # F.layer_norm becomes LayerNormalization, an opset-17 operator
EXAMPLE_SHAPE = (2, 16)  # (batch, sequence) of the traced example
EXAMPLE_CHOICES = 3  # ... and its number of choices (multiple-choice)
VALIDATION_SHAPES = ((1, 1), (3, 7), (5, 33), (1, None))  # None = max_position_embeddings
VALIDATION_CHOICES = (1, 2, 4, 2)  # the number of choices of each validation shape (multiple-choice)
WRITTEN_FILES = (ONNX_FILE, "config.json", *TOKENIZER_FILES)
REPORTED_FUSIONS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization")


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and measured."""

    path: str  # the .onnx file
    task: str
    opset: int
    outputs: tuple[str, ...]  # graph output names
    shapes: list[tuple[int, ...]]  # (batch, sequence) validated; (batch, choices, sequence) for multiple-choice
    max_abs_diff: dict[str, dict[str, float]]  # stage ("fp32", "optimized", "fp16") -> output -> worst diff
    fused_operators: dict[str, int] = field(default_factory=dict)  # op type -> count, with optimize=True
    # fp16 MLM logits: real-token positions compared, those whose top-5 tokens are PyTorch's in order, and the
    # largest fp32 logit gap between tokens float16 ranked differently (near-ties, see _check_top_k)
    top_k: dict[str, float] | None = None
    int8_cosine: dict[str, float] | None = None  # quantize="int8": output -> min cosine vs PyTorch float32
    sentence_files: list[str] = field(default_factory=list)  # the sentence-transformers files carried (export.sentence)

    def summary(self) -> str:
        stages = [s for s in self.max_abs_diff if s != "fp32"]
        lines = [f"exported {self.task} to {self.path} (opset {self.opset}{''.join(', ' + s for s in stages)})",
                 f"validated with onnxruntime against PyTorch on (batch, sequence) {self.shapes}:"]
        for stage, diffs in self.max_abs_diff.items():
            for name, diff in diffs.items():
                rule = (f"cosine {self.int8_cosine[name]:.5f}, at least {MIN_COSINE}" if stage == "int8"
                        else f"tolerance {tolerance(stage, name):.0e}")
                lines.append(f"  {stage:<9} {name:<24} max|diff| {diff:.2e}  ({rule})")
        if self.top_k:
            lines.append(f"  fp16      top-{TOP_K} tokens identical at {self.top_k['identical']:.0f} of "
                         f"{self.top_k['positions']:.0f} positions, the rest up to swapped near-ties (largest fp32 "
                         f"logit gap between swapped tokens {self.top_k['max_swap_gap']:.1e})")
        if self.fused_operators:
            lines.append("fused operators: " + ", ".join(f"{op} {n}" for op, n in self.fused_operators.items()))
        if self.sentence_files:
            lines.append("sentence-transformers configuration carried: " + ", ".join(self.sentence_files))
        return "\n".join(lines)


def export_onnx(model_or_path: str | os.PathLike | BertPreTrainedModel, out_path: str | os.PathLike,
                task: str = DEFAULT_EXPORT_TASK, opset: int | None = None, optimize: bool = False,
                fp16: bool = False, overwrite: bool = False, quantize: str | None = None) -> ExportReport:
    """Export a checkpoint (directory or hub id) or a loaded model to ``out_path/model.onnx``, validated.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 (batch_size, sequence_length), or
    (batch_size, num_choices, sequence_length) for multiple-choice.
    Outputs: the task's ``export.outputs`` in ``bertfast.tasks`` (e.g. text-classification ``logits`` (B,
    num_labels)), all float32, also with ``fp16=True`` (the weights and activations are float16 inside); attention
    probabilities never (run the torch model with ``output_attentions=True`` for them).

    ``optimize``: onnxscript's onnxruntime fusions (they fuse our packed-QKV attention into
    MultiHeadAttention, which onnxruntime's BERT fuser cannot match), then onnxruntime's transformers
    optimizer (``model_type="bert"``). ``fp16``: float16 conversion with float32/int64 graph inputs and outputs.
    ``quantize="int8"``: onnxruntime's dynamic int8 quantization (after the optimizer when both are asked), for
    serving on a CPU; inputs and outputs stay int64 / float32.
    Every stage is validated (``bertfast.export.validation``); a failed check raises ``ExportValidationError``
    listing the diffs. The file's ``metadata_props`` hold the task, the config, the bertfast version, the opset
    and the measured diffs; ``config.json`` and the source's tokenizer files are written beside it, and for a
    sentence-transformers folder exported for feature-extraction or fill-mask its configuration files
    (``bertfast.export.sentence``), so the embedding pipelines on the export follow the folder as the torch ones
    do; a configuration they cannot run is a ValueError before anything is traced.
    ``out_path`` must be new or empty unless ``overwrite=True`` (which replaces only the files listed above).
    """
    spec = check_task(task)
    task = spec.name
    _check_opset(opset)
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r}: the ONNX export quantizes to 'int8' only (or None)")
    if quantize and fp16:
        raise ValueError("fp16=True and quantize='int8' do not go together: pick one (int8 for a CPU, fp16 for a GPU)")
    out_dir = check_out_dir(out_path, overwrite)
    carried = sentence_files(model_or_path, task) if isinstance(model_or_path, (str, os.PathLike)) else []
    model = _load(model_or_path, task, spec)
    names = tuple(n for n in spec.export.outputs if n != "pooler_output" or model.pooler is not None)
    traced = _Traced(model, names).eval()
    proto = _trace(traced, model.config, spec, opset)
    inputs = _random_inputs(model.config, [_input_shape(spec, b, c, s or model.config.max_sequence_length)
                                           for (b, s), c in zip(VALIDATION_SHAPES, VALIDATION_CHOICES)])
    with torch.inference_mode(), ops.force_backend("torch"), plain_linear():  # the graph's own MatMul products
        references = [traced(**x) for x in inputs]
    diffs = {"fp32": compare("fp32", names, inputs, references, run_graph(proto, "fp32", names, inputs))}
    fused: dict[str, int] = {}
    plain = proto if quantize else None  # the int8 rewrite starts from the unoptimized graph (kept only then)
    if optimize:
        proto, fused = _optimize(proto, model.config)
        diffs["optimized"] = compare("optimized", names, inputs, references, run_graph(proto, "optimized", names, inputs))
    top_k = None
    if fp16:
        proto = _to_fp16(proto)
        results = run_graph(proto, "fp16", names, inputs)
        diffs["fp16"] = compare("fp16", names, inputs, references, results)
        top_k = check_top_k([i for i, n in enumerate(names) if "vocab_size" in spec.export.outputs[n]], inputs,
                             references, results)
    cosines = None
    if quantize:
        texts = _text_inputs(model_or_path, model, spec)
        with torch.inference_mode(), ops.force_backend("torch"), plain_linear():
            text_references = [traced(**x) for x in texts]
        proto = quantize_onnx(plain, model, texts)  # calibrated on the texts; then optimized like the float32 graph
        if optimize:
            proto, fused = _optimize(proto, model.config)
        checked = inputs + texts
        diffs["int8"], cosines = compare_int8(names, checked, references + text_references,
                                              run_graph(proto, "int8", names, checked), ExportValidationError,
                                              [False] * len(inputs) + [True] * len(texts))
    report = ExportReport(os.path.join(out_dir, ONNX_FILE), task, _opset_of(proto), names,
                          [tuple(x["input_ids"].shape) for x in inputs], diffs, fused, top_k, cosines, carried)
    _write(proto, report, model, model_or_path, out_dir)
    return report


def _check_opset(opset: int | None) -> None:
    import onnx

    if opset is None:
        return
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise TypeError(f"opset must be an int or None (the exporter's default), got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too low: the graph uses LayerNormalization, which needs opset "
                         f">= {MIN_OPSET}; pass opset={MIN_OPSET} or more (or None for the exporter's default)")
    if opset > newest:
        raise ValueError(f"opset {opset} is newer than the installed onnx knows (up to {newest})")


def check_out_dir(path: str | os.PathLike, overwrite: bool) -> str:
    """An export's folder: new or empty, or replaced with ``overwrite`` (``bertfast.atomic.check_out_dir``)."""
    return atomic_check_out_dir(path, overwrite, lambda where, _: (
        f"{where} exists and is not empty; choose a new directory, or pass overwrite=True (--overwrite) to replace "
        f"the files an export writes there"))


def _load(model_or_path: Any, task: str, spec: TaskSpec) -> BertPreTrainedModel:
    """The model to trace: float32, on the CPU, in eval mode (a copy when the given model is not)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return spec.model_class.from_pretrained(model_or_path)
    if not isinstance(model_or_path, BertPreTrainedModel):
        raise TypeError(f"model_or_path must be a checkpoint directory, a hub id or a bertfast model, got "
                        f"{type(model_or_path).__name__}")
    model = model_or_path
    if getattr(model, "quantization", None) is not None:
        raise ValueError(f"the model is quantized ({model.quantization}) for torch: export the float32 model with "
                         f"quantize={model.quantization!r} for onnxruntime's own int8 graph")
    if not isinstance(model, spec.model_class) and isinstance(model.base_model, spec.model_class):
        model = model.base_model  # the encoder of a model with heads (feature-extraction)
    if not isinstance(model, spec.model_class):
        raise TypeError(f"task {task!r} exports a {spec.model_class.__name__}, got a {type(model).__name__}: pass "
                        f"the task that matches the model, or the checkpoint path so the right class is loaded")
    if model.training or model.device.type != "cpu" or model.dtype != torch.float32:
        model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    return model


class _Traced(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> the task's outputs as a tuple: what the exporter traces."""

    def __init__(self, model: BertPreTrainedModel, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, name) for name in self.names)


def _text_inputs(model_or_path: Any, model: BertPreTrainedModel, spec: TaskSpec) -> list[dict[str, torch.Tensor]]:
    """bertfast's calibration texts tokenized by the checkpoint folder's tokenizer, as the graph's inputs; [] without
    a folder tokenizer or for a task with a choices axis (the int8 stage then calibrates and checks on random ids)."""
    from bertfast.auto_tokenizer import folder_tokenizer
    from bertfast.cpu.int8 import calibration_batches, calibration_length

    tokenizer = folder_tokenizer(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else None
    if tokenizer is None or "num_choices" in spec.export.inputs:
        return []
    batches = calibration_batches(tokenizer, calibration_length(model.config))
    return [{name: batch.get(name, torch.zeros_like(batch["input_ids"])).long() for name in INPUT_NAMES}
            for batch in batches]


def _input_shape(spec: TaskSpec, batch: int, choices: int, seq_len: int) -> tuple[int, ...]:
    """(batch, sequence), or (batch, choices, sequence) for a task with a choices axis."""
    return (batch, choices, seq_len) if "num_choices" in spec.export.inputs else (batch, seq_len)


def _random_inputs(config: Any, shapes: list[tuple[int, ...]], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``random_batch`` inputs, one dict per (batch[, choices], sequence) shape: the first sequence full length,
    the others random lengths."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for shape in shapes:
        rows, seq_len = math.prod(shape[:-1]), shape[-1]
        lengths = torch.randint(1, seq_len + 1, (rows,), generator=generator)
        lengths[0] = seq_len
        batch = random_batch(config, lengths.tolist(), seq_len, generator=generator)  # each (rows, S)
        batches.append({name: t.view(shape) for name, t in batch.items()})  # (B, S) or (B, choices, S)
    return batches


def _trace(traced: _Traced, config: Any, spec: TaskSpec, opset: int | None) -> Any:
    """torch.onnx.export(dynamo=True) with dynamic batch and sequence (and choices) axes -> onnx.ModelProto."""
    dims = {"batch_size": torch.export.Dim("batch_size"), "num_choices": torch.export.Dim("num_choices"),
            "sequence_length": torch.export.Dim("sequence_length", max=config.max_sequence_length)}
    axes = {i: dims[name] for i, name in enumerate(spec.export.inputs)}  # e.g. {0: batch_size, 1: sequence_length}
    shape = _input_shape(spec, EXAMPLE_SHAPE[0], EXAMPLE_CHOICES, min(EXAMPLE_SHAPE[1], config.max_sequence_length))
    example = _random_inputs(config, [shape])[0]
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # else: "torchvision is not installed. Skipping torchvision::nms", x4
    try:
        with warnings.catch_warnings():
            # The exporter keeps one name per dynamic dimension and warns about the others: ours are the ones kept.
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated", category=FutureWarning)
            program = torch.onnx.export(traced, (), kwargs=example, dynamo=True, opset_version=opset,
                                        input_names=list(INPUT_NAMES), output_names=list(traced.names),
                                        dynamic_shapes={name: axes for name in INPUT_NAMES},
                                        verbose=False)
    finally:
        registration.setLevel(level)
    proto = program.model_proto
    if opset is not None and _opset_of(proto) != opset:
        raise ValueError(f"the exporter could not produce opset {opset} (it produced {_opset_of(proto)}); "
                         f"use opset >= {_opset_of(proto)} or None")
    return proto


def _opset_of(proto: Any) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _optimize(proto: Any, config: Any) -> tuple[Any, dict[str, int]]:
    """onnxscript's ORT fusions, then onnxruntime's transformers optimizer; returns the fused op counts."""
    from onnxruntime.transformers.optimizer import optimize_model
    from onnxscript import ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    fused, _ = optimize_for_ort(ir.from_proto(_with_layer_norm_biases(proto)))
    with tempfile.TemporaryDirectory() as tmp:  # from a ModelProto, optimize_model moves out the initializers
        path = os.path.join(tmp, ONNX_FILE)  # that its own shape inference then needs: give it a file
        ir.save(fused, path)
        with _quiet_logging():
            optimized = optimize_model(path, model_type="bert", num_heads=config.num_attention_heads,
                                       hidden_size=config.hidden_size)
    counts = Counter(n.op_type for n in optimized.model.graph.node if n.domain == "com.microsoft")
    return optimized.model, {**dict.fromkeys(REPORTED_FUSIONS, 0), **counts}


def _with_layer_norm_biases(proto: Any) -> Any:
    """A copy of ``proto`` whose LayerNormalization nodes all have a bias: onnxruntime's SkipLayerNormalization
    fusion reads input 2, which ModernBERT's bias-free norms lack; an explicit zero bias leaves every output as
    it is and lets the fusion run."""
    import numpy as np
    from onnx import numpy_helper

    proto = type(proto).FromString(proto.SerializeToString())
    initializers = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or node.input[1] not in \
                initializers or (len(node.input) > 2 and node.input[2]):
            continue
        name = node.input[1] + ".zero_bias"
        if name not in initializers:
            zeros = np.zeros_like(numpy_helper.to_array(initializers[node.input[1]]))
            initializers[name] = numpy_helper.from_array(zeros, name)
            proto.graph.initializer.append(initializers[name])
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
    return proto


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """onnxruntime's transformers tools log warnings such as "symbolic shape inference disabled or failed" from
    top-level logger names of their own; our validation of the result is what counts, so hide them."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _to_fp16(proto: Any) -> Any:
    """float16 weights and activations; int64 inputs and float32 outputs stay as they are (keep_io_types)."""
    from onnxruntime.transformers.onnx_model import OnnxModel as OrtGraph

    graph = OrtGraph(proto)
    # Not onnxruntime's symbolic shape inference: it cannot type the FusedMatMul of the tied MLM decoder and
    # then dumps sym_shape_infer_temp.onnx + weights into the working directory. ONNX's own inference suffices.
    with _quiet_logging():
        graph.convert_float_to_float16(use_symbolic_shape_infer=False, keep_io_types=True)
    return graph.model


def _write(proto: Any, report: ExportReport, model: BertPreTrainedModel, source: Any, out_dir: str) -> None:
    """model.onnx with its metadata, config.json, the source checkpoint's tokenizer files and the
    ``report.sentence_files``, written into a new folder beside ``out_dir`` that then replaces it
    (``bertfast.atomic``): a failed write leaves the previous export whole and nothing half-written. Files in
    ``out_dir`` that an export does not write are kept, except a previous export's sentence-transformers files."""
    import onnx

    onnx.helper.set_model_props(proto, {
        "task": report.task, "bertfast_version": __version__, "opset": str(report.opset),
        "config": json.dumps(model.config.to_dict(), sort_keys=True), "optimized": str(bool(report.fused_operators)),
        "fp16": str("fp16" in report.max_abs_diff), "int8": str("int8" in report.max_abs_diff), "validation_max_abs_diff": json.dumps(report.max_abs_diff),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}"})
    owned = {*WRITTEN_FILES, *FOLDER_FILES, *module_folders(out_dir)}  # a previous export's included
    with replacing_directory(out_dir, owned=owned | {name.split("/")[0] for name in report.sentence_files}) as new:
        onnx.save_model(proto, os.path.join(new, ONNX_FILE))
        model.config.save(new)
        if isinstance(source, (str, os.PathLike)):
            for name in TOKENIZER_FILES:
                path = resolve_file(source, name, required=False)
                if path is not None:
                    shutil.copy(path, os.path.join(new, name))
            for name in report.sentence_files:
                os.makedirs(os.path.dirname(os.path.join(new, name)), exist_ok=True)
                shutil.copy(resolve_file(source, name), os.path.join(new, name))
