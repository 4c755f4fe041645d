"""Exports of sentence-transformers folders: the files an export carries beside model.onnx so that the embedding
pipelines on it follow the folder as they do on the folder itself, and what a Triton client of such an export
still has to do.

An ONNX export holds the encoder (task feature-extraction: ``last_hidden_state``) or the encoder and its MLM head
(fill-mask: ``logits``). A sentence-transformers folder asks for more (``bertfast.st_config``): a pooling, Dense
layers, a Normalize module, ``max_seq_length``, ``do_lower_case`` and prompts; a SparseEncoder its SpladePooling.
Those are not in the graph: an export of such a folder copies the files that say them (``modules.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json`` and each module folder's ``config.json`` and
weights), so ``pipeline("sentence-embedding" | "sparse-embedding", model=export, backend="onnxruntime")`` reads
them as the torch pipeline reads the folder. A configuration the pipelines cannot run is an error at export
time (never an export that silently gives other vectors). A Triton model written from such an export gets the
steps left to its client as parameters of its ``config.pbtxt`` (``client_parameters``).
"""
from __future__ import annotations

import json
import os
import re

from bertfast.hub import resolve_file
from bertfast.models.registry import read_config
from bertfast.st_config import SentenceConfig, read_sentence_config
from bertfast.tasks import TASKS
from bertfast.auto_tokenizer import AutoTokenizer

# sentence-transformers model type -> (the export task whose graph it runs on, the graph output it starts from,
# the bertfast pipeline that runs it with backend="onnxruntime")
EMBEDDING_EXPORTS = {spec.sentence[0]: (spec.export_task, spec.sentence[1], spec.name)
                     for spec in TASKS if spec.sentence is not None}
EMBEDDING_TASKS = tuple(task for task, _, _ in EMBEDDING_EXPORTS.values())
MODULES_FILE = "modules.json"
FOLDER_FILES = (MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json")
MODULE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")  # what a module folder may hold of use
PARAMETER_PREFIX = "sentence_transformers."


def sentence_files(source: str | os.PathLike, task: str, local_files_only: bool = False) -> list[str]:
    """The files (relative paths) of a sentence-transformers folder ``source`` that an export for ``task`` carries:
    none for a plain checkpoint or a task the embedding pipelines do not run on. The configuration is read
    as the pipelines read it, so one they cannot run (module folders outside ``source`` among it) raises here,
    before anything is exported."""
    if task not in EMBEDDING_TASKS or resolve_file(source, MODULES_FILE, required=False,
                                                   local_files_only=local_files_only) is None:
        return []
    try:
        read_sentence_config(source, local_files_only=local_files_only)
    except ValueError as e:
        raise ValueError(f"{e}. An export carries the sentence-transformers configuration of "
                         f"{os.fspath(source)!r} for the embedding pipelines to follow, and this one they cannot "
                         f"run: export a copy of the checkpoint without {MODULES_FILE} for the bare {task} outputs"
                         ) from e
    files = [name for name in FOLDER_FILES if resolve_file(source, name, required=False,
                                                           local_files_only=local_files_only)]
    for folder in _module_paths(resolve_file(source, MODULES_FILE, local_files_only=local_files_only)):
        files += [f"{folder}/{name}" for name in MODULE_FILES
                  if resolve_file(source, f"{folder}/{name}", required=False, local_files_only=local_files_only)]
    return files


def module_folders(folder: str | os.PathLike) -> list[str]:
    """The module subfolders the ``modules.json`` of a local ``folder`` names (none without a readable one): what
    an export in that folder owns besides ``FOLDER_FILES``."""
    path = os.path.join(folder, MODULES_FILE)
    return [re.split(r"[\\/]", p)[0] for p in _module_paths(path)] if os.path.isfile(path) else []


def _module_paths(modules_file: str, kind: str | None = None) -> list[str]:
    """The module folders (of class name ``kind``, or all) a modules.json names, in its order; none when it is
    not a list of modules (the reader of the configuration says why)."""
    try:
        with open(modules_file, encoding="utf-8") as f:
            modules = sorted(json.load(f), key=lambda m: m.get("idx", 0))
        return [m["path"] for m in modules if m.get("path") and kind in (None, m["type"].rsplit(".", 1)[-1])]
    except (OSError, TypeError, ValueError, AttributeError, KeyError):
        return []


def client_parameters(folder: str | os.PathLike, task: str, outputs: list[str]) -> dict[str, str]:
    """Triton model parameters for an export folder whose graph (export ``task``, ``outputs``) needs client-side
    steps to give its sentence-transformers folder's embedding: each setting under ``PARAMETER_PREFIX`` and
    ``client_steps``, the steps in order. Empty for a plain export or one whose graph lacks the output the
    folder's model type starts from."""
    config = read_sentence_config(folder, local_files_only=True) if sentence_files(folder, task, True) else None
    if config is None or EMBEDDING_EXPORTS[config.model_type][:2] not in ((task, name) for name in outputs):
        return {}
    max_length = _max_length(folder, config)
    dense_folders = _module_paths(os.path.join(folder, MODULES_FILE), "Dense")
    settings = {"model_type": config.model_type, "max_seq_length": max_length,
                "do_lower_case": config.do_lower_case, "prompts": config.prompts,
                "default_prompt_name": config.default_prompt_name or ""}
    if config.model_type == "SparseEncoder":
        settings.update(splade_pooling=config.splade_pooling, splade_activation=config.splade_activation)
    else:
        dense = [{"path": path, "in_features": layer.weight.shape[1], "out_features": layer.weight.shape[0],
                  "bias": layer.bias is not None, "activation": layer.activation}
                 for path, layer in zip(dense_folders, config.dense)]
        settings.update(pooling=",".join(config.pooling), include_prompt=config.include_prompt, dense=dense,
                        normalize=config.normalize)
    parameters = {PARAMETER_PREFIX + key: value if isinstance(value, str) else json.dumps(value)
                  for key, value in settings.items()}
    return {**parameters, "client_steps": _steps(config, max_length, dense_folders)}


def _max_length(folder: str | os.PathLike, config: SentenceConfig) -> int:
    """The truncation length of the pipelines on the export: the folder's max_seq_length, else the tokenizer's
    model_max_length, at most the model's max_position_embeddings (as ``SentenceConfigPipeline`` sets it)."""
    positions = read_config(os.path.join(folder, "config.json")).max_sequence_length
    length = config.max_seq_length or AutoTokenizer.from_pretrained(folder).model_max_length
    return min(length, positions)


def _steps(config: SentenceConfig, max_length: int, dense_folders: list[str]) -> str:
    """The client's steps from the texts to the folder's embedding, numbered, one sentence each."""
    prompt = config.prompts.get(config.default_prompt_name) if config.default_prompt_name else None
    steps = [f"prepend the default prompt {config.default_prompt_name!r} ({prompt!r}; {PARAMETER_PREFIX}prompts "
             f"lists the others)"] if prompt else []
    steps += ["lowercase the text (prompt included)"] if config.do_lower_case else []
    steps.append(f"tokenize with truncation to {max_length} tokens (max_seq_length) and send input_ids, "
                 f"attention_mask and token_type_ids")
    _, output, pipeline_task = EMBEDDING_EXPORTS[config.model_type]
    if config.model_type == "SparseEncoder":
        twice = " and log(1 + x) once more" if config.splade_activation == "log1p_relu" else ""
        steps.append(f"take log(1 + relu({output})){twice} at each real token (attention_mask 1) and its "
                     f"{config.splade_pooling} over the tokens: one weight per vocabulary entry")
    else:
        modes = ", ".join(config.pooling) + (" (concatenated in this order)" if len(config.pooling) > 1 else "")
        left_out = "" if config.include_prompt or not prompt else (
            ", leaving out the first tokens: [CLS] and the prompt's (include_prompt false)")
        steps.append(f"pool {output} over attention_mask: {modes}{left_out}")
        for path, layer in zip(dense_folders, config.dense):
            bias, tanh = layer.bias is not None, layer.activation == "tanh"
            tensors = "W and b are linear.weight and linear.bias" if bias else "W is linear.weight"
            steps.append(f"apply Dense {path} ({layer.weight.shape[1]} -> {layer.weight.shape[0]}): "
                         f"{'tanh(' if tanh else ''}x @ W.T{' + b' if bias else ''}{')' if tanh else ''}, where "
                         f"{tensors} of {path}/model.safetensors (or pytorch_model.bin) in version folder 1")
        steps += ["L2-normalise"] if config.normalize else []
    numbered = "; ".join(f"{i}) {step}" for i, step in enumerate(steps, 1))
    return (f"This graph returns {output}, not the embedding: the client computes it as bertfast's pipeline and "
            f"sentence-transformers do: {numbered}. Version folder 1 also holds the export's config.json, "
            f"tokenizer and sentence-transformers files: bertfast.pipeline({pipeline_task!r}, "
            f"model='<this model>/1', backend='onnxruntime') runs every step from it.")
