"""Training checkpoints on disk: the folder ``Trainer.save`` swaps in whole, its manifest, and the checks a
resume runs before trusting it.

A checkpoint folder holds what ``from_pretrained`` loads (config.json, model.safetensors, tokenizer files),
``trainer_state.pt`` and ``checkpoint_manifest.json``, written last: the step, every file's size and SHA-256,
the data signature (the arguments, vocabulary and corpus a resumed run must share to continue exactly) and
the model config. The folder is written beside its target and swapped in (``bertfast.atomic``), so a kill
leaves the previous checkpoint or the new one, never a mix; a resume checks every file against the manifest.
"""
from __future__ import annotations

import array
import contextlib
import errno
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from bertfast.atomic import check_out_dir as atomic_check_out_dir, current_version, recover_directory
from bertfast.checkpoint import CheckpointError
from bertfast.tokenizer import BertTokenizer

TRAINER_STATE = "trainer_state.pt"
MANIFEST = "checkpoint_manifest.json"
MANIFEST_FORMAT = 1
# The arguments the batches depend on: a resumed run that changes one no longer continues the same stream.
DATA_ARGUMENTS = ("batch_size", "grad_accum", "world_size", "max_seq_length", "seed", "mlm_probability",
                  "max_predictions_per_seq", "whole_word_mask", "short_seq_prob", "stream", "shard_documents",
                  "shuffle_buffer")


# How a full disk reads in the messages of writers that do not raise OSError(ENOSPC): safetensors' SafetensorError
# ("I/O error: No space left on device (os error 28)") and a quota's equivalent.
DISK_FULL_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def _disk_full(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from or during, is a full disk (or quota)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(error) for text in DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def disk_full_message(directory: str | os.PathLike, option: str = "--out") -> Iterator[None]:
    """Around a save that swaps ``directory`` in whole (``replacing_directory``, inside this block): a full disk,
    however the writer reports it (OSError, SafetensorError, torch's RuntimeError raised while its file's OSError was
    handled), becomes one OSError (errno ENOSPC) naming the folder; other errors pass unchanged."""
    try:
        yield
    except Exception as e:
        if not _disk_full(e):
            raise
        error = OSError(f"no space left on {os.path.abspath(os.fspath(directory))}: the save failed, and what the "
                        f"folder held before is kept as it was; free some space there, or point {option} elsewhere")
        error.errno = errno.ENOSPC
        raise error from e


def save_torch(obj: Any, path: str) -> None:
    """``torch.save`` through a file of ours, so that a full disk is the file's OSError (ENOSPC) and not only torch's
    "unexpected pos" RuntimeError."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vocabulary_signature(tokenizer: BertTokenizer) -> dict[str, Any]:
    """Size and SHA-256 of the vocabulary (tokens in id order, added tokens included)."""
    tokens = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    text = "\n".join(f"{token}\t{index}" for token, index in tokens)
    return {"tokens": len(tokens), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def corpus_signature(documents: Sequence[Sequence[Sequence[int]]]) -> dict[str, Any]:
    """Document, sentence and token counts of a tokenized corpus, and the SHA-256 of its token ids (each document's
    sentence count, then each sentence's length and ids, as int64): two corpora of equal counts differ in it."""
    digest = hashlib.sha256()
    sentences = tokens = 0
    for document in documents:
        digest.update(array.array("q", [len(document)]).tobytes())
        for sentence in document:
            digest.update(array.array("q", [len(sentence), *sentence]).tobytes())
            sentences, tokens = sentences + 1, tokens + len(sentence)
    return {"documents": len(documents), "sentences": sentences, "tokens": tokens, "sha256": digest.hexdigest()}


def data_signature(arguments: Mapping[str, Any], tokenizer: BertTokenizer,
                   documents: Sequence[Sequence[Sequence[int]]] | None = None) -> dict[str, Any]:
    """What a resumed run must share with the run it continues, in its JSON form (as the manifest holds it);
    ``documents`` None leaves the corpus out."""
    signature = {"arguments": {name: arguments[name] for name in DATA_ARGUMENTS},
                 "vocabulary": vocabulary_signature(tokenizer)}
    if documents is not None:
        signature["corpus"] = corpus_signature(documents)
    return json.loads(json.dumps(signature))


def write_manifest(directory: str, step: int, data: dict[str, Any], config: dict[str, Any]) -> None:
    """The manifest of a complete checkpoint folder (inside the folder being written, before the swap)."""
    files = {name: {"size": os.path.getsize(os.path.join(directory, name)),
                    "sha256": _sha256(os.path.join(directory, name))}
             for name in sorted(os.listdir(directory)) if name != MANIFEST}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "files": files, "data": data, "config": config}
    with open(os.path.join(directory, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint folder, after finishing or undoing a save a kill interrupted (one that cannot be
    finished here, for want of write permission, is an error naming the whole checkpoint)."""
    directory = os.fspath(directory)
    with contextlib.suppress(OSError):  # a folder this process may not write: current_version names its version
        recover_directory(directory)
    found = current_version(directory)
    if found != directory:
        raise CheckpointError(f"{directory} is missing: a save of it was stopped between its renames and cannot be "
                              f"finished here; the whole checkpoint is {found}: resume from it (--resume {found}), or "
                              f"move it to {directory}")
    state_path = os.path.join(directory, TRAINER_STATE)
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"{state_path} not found: resume from a directory written by `bertfast pretrain`")
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} not found: {directory} was not written whole by `bertfast pretrain` (or "
                              f"by a version without manifests), so it cannot be checked; start a new run")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a valid manifest ({e}); the checkpoint cannot be checked") from e
    fields = {"format": int, "step": int, "files": dict, "data": dict, "config": dict}
    wrong = [name for name, kind in fields.items() if not isinstance(manifest, dict)
             or not isinstance(manifest.get(name), kind)]
    if wrong or manifest["format"] != MANIFEST_FORMAT:
        raise CheckpointError(f"{path} is not a format-{MANIFEST_FORMAT} checkpoint manifest (fields "
                              f"{', '.join(wrong) or 'format'} missing or wrong)")
    return manifest


def verify_checkpoint(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is present with its size and SHA-256."""
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        path = os.path.join(os.fspath(directory), name)
        if not isinstance(entry, dict) or not os.path.isfile(path):
            problems.append(f"{name} is missing")
        elif os.path.getsize(path) != entry.get("size") or _sha256(path) != entry.get("sha256"):
            problems.append(f"{name} changed since the checkpoint was written")
    if problems:
        raise CheckpointError(f"the checkpoint in {os.fspath(directory)} (step {manifest['step']}) does not match "
                              f"its manifest: {'; '.join(problems)}. Resume from an intact copy, or start a new run")


def load_trainer_state(directory: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """trainer_state.pt of a verified checkpoint (tensors and plain containers only)."""
    path = os.path.join(os.fspath(directory), TRAINER_STATE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(state, dict) or state.get("step") != manifest["step"]:
        raise CheckpointError(f"{path} is not the state of step {manifest['step']} that the manifest records")
    return state


def _describe(value: Any) -> str:
    if isinstance(value, dict):  # a signature: its counts, then the start of its digest
        counts = ", ".join(f"{v} {k}" for k, v in value.items() if k != "sha256")
        return counts + (f" (sha256 {value['sha256'][:12]})" if "sha256" in value else "")
    return repr(value)


def _corpus_differs(saved: Any, current: Any) -> bool:
    """Two corpus signatures compared on the fields both record: a manifest written before the corpus digest existed
    has the counts only."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return saved != current
    return any(saved[k] != current[k] for k in set(saved) & set(current))


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``name: saved -> current`` for each key both hold with different values (nested dicts by field)."""
    out = []
    for key in sorted(set(saved) & set(current)):
        if key == "arguments":
            out += differences(saved[key], current[key])
        elif _corpus_differs(saved[key], current[key]) if key == "corpus" else saved[key] != current[key]:
            out.append(f"{key}: {_describe(saved[key])} -> {_describe(current[key])}")
    return out


def check_resume_data(saved: Mapping[str, Any], current: Mapping[str, Any], allow_changes: bool) -> None:
    """Refuse (or, with ``allow_changes``, warn about) a resume whose data arguments differ from the run's."""
    changed = differences(saved, current)
    if not changed:
        return
    message = (f"resuming with different data than the checkpoint was trained on ({'; '.join(changed)}): the run "
               f"would not continue the same batches")
    if not allow_changes:
        raise ValueError(f"{message}. Pass the original values, or --allow-data-changes (allow_data_changes=True) "
                         f"to continue anyway")
    warnings.warn(message)


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool, resume: str | os.PathLike | None = None) -> None:
    """A checkpoint folder may be written to a new or empty ``out_dir``, to the folder being resumed, or with
    ``overwrite`` over a folder of files (never one holding sub-folders: that is not a checkpoint)."""
    atomic_check_out_dir(os.path.abspath(os.fspath(out_dir)), overwrite, _refusal, resume, only_files=True)


def _refusal(out_dir: str, entries: list[str]) -> str:
    what = "a checkpoint" if TRAINER_STATE in entries else "files (" + ", ".join(entries[:5]) + (
        ", ..." if len(entries) > 5 else "") + ")"
    return (f"--out {out_dir} already holds {what}: pass --resume {out_dir} to continue it, --overwrite to replace "
            f"it, or choose a new --out")
