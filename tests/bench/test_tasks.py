"""bertfast/bench/tasks.py: what each --task measures, the checkpoint every provider loads for it, and that a head
adds no host sync and no (S, vocab)-sized intermediate to the encoder it sits on."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import bertfast
from bertfast.bench.options import DEFAULT_TASK, GRID_TASKS
from bertfast.bench.tasks import bench_task, task_checkpoint
from bertfast.bench.workloads import build_workloads
from bertfast.config import BertConfig
from bertfast.outputs import BaseModelOutputWithPooling
from tests.helpers import LOGITS_ATOL

HEAD_TASKS = [t for t in GRID_TASKS if t != DEFAULT_TASK]
# Sizes that differ from one another, so that a vocabulary-sized axis cannot be mistaken for another.
VOCAB, BATCH, SEQ = 1009, 3, 11
CONFIG = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=64)


def test_what_each_task_measures():
    expected = {  # fields, per token, (B, num_choices, S) inputs
        "feature-extraction": (("last_hidden_state",), True, False),
        "text-classification": (("logits",), False, False),
        "token-classification": (("logits",), True, False),
        "question-answering": (("start_logits", "end_logits"), True, False),
        "multiple-choice": (("logits",), False, True),
    }
    assert set(expected) == set(GRID_TASKS)
    for name, (fields, per_token, choices) in expected.items():
        task = bench_task(name)
        assert (task.fields, task.per_token, task.choices) == (fields, per_token, choices)
        assert task.model_class.__name__ in task.describe() and name in task.describe()
    assert bench_task().model_class is bertfast.BertModel
    from bertfast.models.modernbert import ModernBertConfig  # another architecture: its own class is named
    modern = ModernBertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    assert bench_task().describe(modern).startswith("task feature-extraction: ModernBertModel,")
    assert "ModernBertForQuestionAnswering" in bench_task("question-answering").describe(modern)
    with pytest.raises(ValueError, match="unknown task 'fill-mask'; bench measures feature-extraction"):
        bench_task("fill-mask")


def test_inputs_and_selected_outputs():
    batch = build_workloads([BATCH], [SEQ], mixed=False, max_len=64)[0].inputs(CONFIG)
    choices = bench_task("multiple-choice").inputs(batch)
    assert all(v.shape == (1, BATCH, SEQ) and torch.equal(v[0], batch[k]) for k, v in choices.items())
    assert bench_task("question-answering").inputs(batch) is batch
    start, end = torch.randn(BATCH, SEQ), torch.randn(BATCH, SEQ)
    output = bertfast.outputs.QuestionAnsweringModelOutput(start_logits=start, end_logits=end)
    stacked = bench_task("question-answering").select(output)
    assert stacked.shape == (BATCH, SEQ, 2)
    assert torch.equal(stacked[..., 0], start) and torch.equal(stacked[..., 1], end)


@pytest.mark.parametrize("name", HEAD_TASKS)
def test_a_base_checkpoint_gets_a_head_that_both_libraries_load(tmp_path, tiny_checkpoint, name):
    """tiny_checkpoint is a BertForPreTraining: the task model is built with a random head and saved, and
    transformers' class of the same name gives the same outputs from it as bertfast's."""
    task = bench_task(name)
    assert task_checkpoint(tiny_checkpoint, str(tmp_path), bench_task()) == tiny_checkpoint
    directory = task_checkpoint(tiny_checkpoint, str(tmp_path), task)
    ours = task.model_class.from_pretrained(directory)  # strict: the head is in the checkpoint now
    theirs = getattr(transformers, task.model_class.__name__).from_pretrained(directory).eval()
    batch = task.inputs(build_workloads([BATCH], [SEQ], mixed=False, max_len=64)[0].inputs(ours.config))
    with torch.inference_mode():
        torch.testing.assert_close(task.select(ours(**batch)), task.select(theirs(**batch)), atol=LOGITS_ATOL, rtol=0)


def test_a_checkpoint_with_the_head_keeps_it(tmp_path, qa_checkpoint):
    task = bench_task("question-answering")
    saved = task.model_class.from_pretrained(task_checkpoint(qa_checkpoint, str(tmp_path), task))
    original = task.model_class.from_pretrained(qa_checkpoint)
    assert torch.equal(saved.qa_outputs.weight, original.qa_outputs.weight)


class OutputShapes(TorchDispatchMode):
    """Records the shape of every tensor each aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


class MetaEncoder(nn.Module):
    """Stands in for a model's ``bert``: meta hidden states of the input's shape, and the real module's
    embeddings (the MLM head reads the word embeddings)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.embeddings = bert.embeddings

    def forward(self, input_ids: torch.Tensor, *args, **kwargs) -> BaseModelOutputWithPooling:
        rows, seq_len = input_ids.shape
        return BaseModelOutputWithPooling(torch.empty(rows, seq_len, CONFIG.hidden_size, device="meta"),
                                          torch.empty(rows, CONFIG.hidden_size, device="meta"))


def head_shapes(model_class: type[bertfast.BertPreTrainedModel], inputs: dict[str, torch.Tensor]) -> list[tuple]:
    """The head of ``model_class`` run alone on meta tensors: meta tensors have no values, so any host sync
    (``.item()``, ``.tolist()``, ``nonzero``, a data-dependent branch) raises. -> every op's output shape."""
    with torch.device("meta"):
        model = model_class(CONFIG).eval()
    model.bert = MetaEncoder(model.bert)
    with OutputShapes() as recorder:
        model(**{k: v.to("meta") for k, v in inputs.items()})
    return recorder.shapes


@pytest.mark.parametrize("name", HEAD_TASKS)
def test_heads_add_no_host_sync_and_no_vocabulary_sized_tensor(name):
    task = bench_task(name)
    batch = task.inputs(build_workloads([BATCH], [SEQ], mixed=False, max_len=64)[0].inputs(CONFIG))
    shapes = head_shapes(task.model_class, batch)
    assert shapes and all(VOCAB not in shape for shape in shapes), shapes
    assert max(map(torch.Size.numel, map(torch.Size, shapes))) <= BATCH * SEQ * CONFIG.hidden_size


def test_the_head_check_sees_what_it_looks_for():
    """The control: the MLM head does build (B, S, vocab) logits, and a host sync on meta tensors raises."""
    batch = build_workloads([BATCH], [SEQ], mixed=False, max_len=64)[0].inputs(CONFIG)
    assert (BATCH, SEQ, VOCAB) in head_shapes(bertfast.BertForMaskedLM, batch)
    with pytest.raises(Exception):
        torch.empty(3, device="meta").sum().item()
    with pytest.raises(Exception):
        torch.empty(3, device="meta").tolist()
