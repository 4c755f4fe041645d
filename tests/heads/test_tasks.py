"""bertfast/heads/tasks.py: the four task models against transformers — logits over real tokens on every padding
layout, losses for every problem type, a new head from a base checkpoint (num_labels=), labels through
save_pretrained, from_hf, half precision and the Triton path — and their errors."""
from __future__ import annotations

import json
import logging
import os
import warnings

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import bertfast
from bertfast import ops
from bertfast.inputs import IGNORE_INDEX
from tests.helpers import (LOGITS_ATOL, TASK_CLASSES, TINY, copy_config, hf_task_model, needs_cuda, padded_batch,
                           task_batch)

QA, MC = "BertForQuestionAnswering", "BertForMultipleChoice"
OUTPUTS = {"BertForSequenceClassification": ("logits",), "BertForTokenClassification": ("logits",),
           QA: ("start_logits", "end_logits"), MC: ("logits",)}
PER_TOKEN = {"BertForTokenClassification", QA}  # outputs (B, S, ...): compared at real tokens
HEADS = {"BertForSequenceClassification": "classifier", "BertForTokenClassification": "classifier",
         QA: "qa_outputs", MC: "classifier"}
# (class, number of labels in id2label): question answering always has its 2 (start, end)
LABELLED = [(name, n) for name in TASK_CLASSES for n in ((2,) if name == QA else (3, 9))]
LENGTHS = [13, 9, 4, 1]
LOSS_ATOL = 1e-5


def hf_load(name: str, path: str):
    return getattr(transformers, name).from_pretrained(path, attn_implementation="eager").eval()


def max_diff(name: str, actual, expected, batch: dict[str, torch.Tensor]) -> float:
    """Largest |ours - transformers| over the class's outputs; per-token outputs over real tokens only."""
    worst = 0.0
    for field in OUTPUTS[name]:
        ours, theirs = getattr(actual, field), getattr(expected, field)
        assert ours.shape == theirs.shape, field
        if name in PER_TOKEN:
            real = batch["attention_mask"].bool()
            ours, theirs = ours[real], theirs[real]
        worst = max(worst, (ours.float() - theirs.float()).abs().max().item())
    return worst


@pytest.mark.parametrize("layout", ["padding_free", "padded", "left_padding"])
@pytest.mark.parametrize("name, num_labels", LABELLED, ids=[f"{n}-{k}" for n, k in LABELLED])
def test_logits_match_transformers_on_every_padding_layout(name, num_labels, layout, task_checkpoint):
    path = task_checkpoint(name, num_labels)
    hf, ours = hf_load(name, path), getattr(bertfast, name).from_pretrained(path)
    assert (ours.config.id2label, ours.config.label2id) == (hf.config.id2label, hf.config.label2id)
    ours.bert.padding_free = layout != "padded"
    batch = task_batch(name, TINY["vocab_size"], LENGTHS)
    if layout == "left_padding":
        batch = {k: v.flip(-1) for k, v in batch.items()}
    with torch.no_grad():
        expected, actual = hf(**batch), ours(**batch)
    assert max_diff(name, actual, expected, batch) <= LOGITS_ATOL


@pytest.mark.parametrize("name", TASK_CLASSES)
def test_state_dict_keys_are_transformers_keys(name, task_checkpoint):
    path = task_checkpoint(name)
    keys = set(getattr(bertfast, name).from_pretrained(path).state_dict())
    assert keys == set(load_file(os.path.join(path, "model.safetensors")))


SEQUENCE_LABELS = {  # case -> (config.problem_type, num_labels, labels for a batch of 4)
    "single_label_inferred": (None, 3, torch.tensor([0, 2, 1, 2])),
    "single_label_ignored": ("single_label_classification", 3, torch.tensor([0, IGNORE_INDEX, 1, 2])),
    "multi_label_inferred": (None, 3, torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]])),
    "multi_label_probabilities": ("multi_label_classification", 9, torch.rand(4, 9)),
    "regression_inferred": (None, 1, torch.tensor([0.5, -1.0, 2.0, 3.5])),
    "regression_one_column": ("regression", 1, torch.tensor([[0.5], [-1.0], [2.0], [3.5]])),
    "regression_many": ("regression", 3, torch.randn(4, 3)),
}


@pytest.mark.parametrize("problem_type, num_labels, labels", SEQUENCE_LABELS.values(), ids=SEQUENCE_LABELS.keys())
def test_sequence_classification_loss_for_every_problem_type(problem_type, num_labels, labels, task_checkpoint):
    path = task_checkpoint("BertForSequenceClassification", num_labels)
    hf = hf_load("BertForSequenceClassification", path)
    ours = bertfast.BertForSequenceClassification.from_pretrained(path)
    hf.config.problem_type = ours.config.problem_type = problem_type
    batch = padded_batch(TINY["vocab_size"], LENGTHS)
    with torch.no_grad():
        expected, actual = hf(**batch, labels=labels), ours(**batch, labels=labels)
    torch.testing.assert_close(actual.loss, expected.loss, atol=LOSS_ATOL, rtol=0)
    assert ours.config.problem_type == problem_type, "inferring the problem type leaves the config as it is"


def token_labels(batch: dict[str, torch.Tensor], num_labels: int) -> torch.Tensor:
    """Random tags at real tokens, IGNORE_INDEX at padding (as a collator sets them)."""
    labels = torch.randint(0, num_labels, batch["input_ids"].shape)
    return labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)


HEAD_LABELS = {  # class -> its label arguments for a (4, S) batch (multiple choice: 3 choices)
    "BertForTokenClassification": lambda batch: {"labels": token_labels(batch, 9)},
    # beyond the sequence (ignored), negative (clamped to 0) and (B, 1) positions, as transformers takes them
    QA: lambda batch: {"start_positions": torch.tensor([1, 5, 40, -2]),
                       "end_positions": torch.tensor([[3], [8], [2], [0]])},
    MC: lambda batch: {"labels": torch.tensor([0, 2, 1, 1])},
}


@pytest.mark.parametrize("name", HEAD_LABELS)
def test_token_question_answering_and_choice_losses_match_transformers(name, task_checkpoint):
    """Question answering without padding here (padded batches: the next test)."""
    path = task_checkpoint(name, 9)
    hf, ours = hf_load(name, path), getattr(bertfast, name).from_pretrained(path)
    batch = task_batch(name, TINY["vocab_size"], [13] * 4 if name == QA else LENGTHS)
    labels = HEAD_LABELS[name](batch)
    with torch.no_grad():
        expected, actual = hf(**batch, **labels), ours(**batch, **labels)
    torch.testing.assert_close(actual.loss, expected.loss, atol=LOSS_ATOL, rtol=0)
    assert max_diff(name, actual, expected, batch) <= LOGITS_ATOL


@pytest.mark.parametrize("side", ["right", "left"])
def test_question_answering_loss_on_padded_batches_matches_transformers(task_checkpoint, side):
    """transformers' softmax covers padding positions too: with positions given, the padding positions keep
    transformers' hidden states, so the loss and every logit equal transformers' (padding included)."""
    path = task_checkpoint(QA)
    hf, ours = hf_load(QA, path), bertfast.BertForQuestionAnswering.from_pretrained(path)
    batch = padded_batch(TINY["vocab_size"], LENGTHS)
    if side == "left":
        batch = {k: v.flip(1) for k, v in batch.items()}
    labels = HEAD_LABELS[QA](batch)
    with torch.no_grad():
        expected, actual = hf(**batch, **labels), ours(**batch, **labels)
        without_loss = ours(**batch)
    torch.testing.assert_close(actual.loss, expected.loss, atol=LOSS_ATOL, rtol=0)
    for name in ("start_logits", "end_logits"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=LOGITS_ATOL, rtol=0)
    assert max_diff(QA, without_loss, expected, batch) <= LOGITS_ATOL


def test_label_errors_say_what_to_fix(task_checkpoint):
    batch = padded_batch(TINY["vocab_size"], [5, 3])
    sequence = bertfast.BertForSequenceClassification.from_pretrained(task_checkpoint("BertForSequenceClassification"))
    with pytest.raises(ValueError, match=r"labels must hold class ids in \[0, 3\) or -100"):
        sequence(**batch, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels has shape \(2, 2\), expected \(2, 3\)"):
        sequence(**batch, labels=torch.ones(2, 2))  # float labels: multi-label, one column per label
    sequence.config.problem_type = "regression"
    with pytest.raises(TypeError, match="labels must be a real-valued tensor"):
        sequence(**batch, labels=[0.5, 1.0])
    tokens = bertfast.BertForTokenClassification.from_pretrained(task_checkpoint("BertForTokenClassification"))
    with pytest.raises(ValueError, match=r"labels has shape \(2, 4\), expected \(2, 5\)"):
        tokens(**batch, labels=torch.zeros(2, 4, dtype=torch.long))
    qa = bertfast.BertForQuestionAnswering.from_pretrained(task_checkpoint(QA))
    with pytest.raises(TypeError, match="start_positions must be an integer tensor"):
        qa(**batch, start_positions=torch.tensor([1.0, 2.0]), end_positions=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"end_positions has shape \(3,\), expected \(2,\)"):
        qa(**batch, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([1, 2, 3]))
    assert qa(**batch, start_positions=torch.tensor([1, 2])).loss is None, "a loss needs both positions"
    choice = bertfast.BertForMultipleChoice.from_pretrained(task_checkpoint(MC))
    with pytest.raises(ValueError, match=r"takes input_ids of shape \(batch, num_choices, sequence\), got \(2, 5\)"):
        choice(**batch)
    choices = task_batch(MC, TINY["vocab_size"], [5, 3])
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 5\) but input_ids has shape \(2, 3, 5\)"):
        choice(choices["input_ids"], batch["attention_mask"])
    with pytest.raises(ValueError, match=r"labels must hold class ids in \[0, 3\)"):
        choice(**choices, labels=torch.tensor([0, 3]))


# Loading a base checkpoint (BertForPreTraining: no task head) with num_labels / id2label.

@pytest.mark.parametrize("name", TASK_CLASSES)
def test_a_base_checkpoint_gets_a_new_head_with_one_warning(name, tiny_checkpoint, caplog):
    num_labels = 2 if name == QA else 9
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="bertfast.pretrained"):
        warnings.simplefilter("always")
        model = getattr(bertfast, name).from_pretrained(tiny_checkpoint, num_labels=num_labels)
    head = getattr(model, HEADS[name])
    keys = [f"{HEADS[name]}.bias", f"{HEADS[name]}.weight"]
    assert [str(w.message) for w in caught] == [
        f"{name}: the checkpoint has no task head; new weights {keys} are initialised randomly (normal(0, 0.02), zero "
        f"bias): fine-tune the model before using its outputs"]
    assert "ignoring checkpoint weights of parts it does not have" in caplog.text and "cls.predictions" in caplog.text
    assert abs(head.weight.std().item() - 0.02) < 0.005 and torch.equal(head.bias, torch.zeros_like(head.bias))
    assert model.config.num_labels == num_labels and model.config.id2label[num_labels - 1] == f"LABEL_{num_labels - 1}"
    checkpoint = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                       checkpoint["bert.encoder.layer.1.output.dense.weight"]), "the encoder is the checkpoint's"
    with torch.no_grad():
        out = model(**task_batch(name, TINY["vocab_size"], [6, 2]))
    assert all(torch.isfinite(getattr(out, field)).all() for field in OUTPUTS[name])


def test_new_head_names_come_from_id2label(tiny_checkpoint):
    with pytest.warns(UserWarning, match="no task head"):
        model = bertfast.BertForTokenClassification.from_pretrained(tiny_checkpoint, id2label={0: "O", 1: "B-PER",
                                                                                               2: "I-PER"})
    assert (model.config.num_labels, model.config.label2id) == (3, {"O": 0, "B-PER": 1, "I-PER": 2})
    assert model.classifier.weight.shape == (3, TINY["hidden_size"])


def test_a_missing_head_without_num_labels_and_missing_encoder_weights_stay_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(bertfast.CheckpointError,
                       match=r"has no task head \(\['classifier.bias', 'classifier.weight'\]\).*Pass num_labels=N"):
        bertfast.BertForSequenceClassification.from_pretrained(tiny_checkpoint)
    copy_config(tiny_checkpoint, tmp_path)
    state = load_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    del state["bert.encoder.layer.0.output.dense.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(bertfast.CheckpointError, match=r"lacks 3 weights: \['bert.encoder.layer.0.output.dense.bias', "
                                                      r"'classifier.bias', 'classifier.weight'\]"):
        bertfast.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)


def test_num_labels_disagreeing_with_the_checkpoint_is_an_error_naming_both(task_checkpoint, tmp_path):
    labelled = task_checkpoint("BertForSequenceClassification", 3)
    with pytest.raises(ValueError, match=r"num_labels=9 but the checkpoint's config has 3 labels"):
        bertfast.BertForSequenceClassification.from_pretrained(labelled, num_labels=9)
    with pytest.raises(ValueError, match=r"num_labels=5 but the checkpoint's config has 3 labels"):
        bertfast.BertForSequenceClassification.from_pretrained(labelled, id2label={i: str(i) for i in range(5)})
    renamed = bertfast.BertForSequenceClassification.from_pretrained(labelled, id2label={0: "a", 1: "b", 2: "c"})
    assert renamed.config.id2label == {0: "a", 1: "b", 2: "c"}, "the same number of labels may be renamed"
    transformers.BertForSequenceClassification(transformers.BertConfig(**TINY)).save_pretrained(tmp_path)
    assert "id2label" not in json.loads((tmp_path / "config.json").read_text()), "2 labels: transformers' default"
    with pytest.raises(bertfast.CheckpointError, match=r"classifier.weight has 2 outputs but the model needs 3 "
                                                      r"\(num_labels=3\)"):
        bertfast.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    with pytest.raises(ValueError, match="num_labels must be 2, got 3"):
        bertfast.BertForQuestionAnswering.from_pretrained(tmp_path, num_labels=3)
    with pytest.raises(bertfast.CheckpointError, match=r"has 2 outputs but the model needs 1 \(one score per choice\)"):
        bertfast.BertForMultipleChoice.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", TASK_CLASSES)
def test_save_pretrained_round_trips_through_transformers(name, task_checkpoint, tmp_path):
    """transformers -> bertfast -> save_pretrained -> transformers: the same labels and the same logits."""
    path = task_checkpoint(name, 9)
    hf, ours = hf_load(name, path), getattr(bertfast, name).from_pretrained(path)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == [name] and "num_labels" not in saved
    assert saved["id2label"] == {str(i): name for i, name in hf.config.id2label.items()}
    back = hf_load(name, str(tmp_path))
    assert (back.config.id2label, back.config.num_labels) == (hf.config.id2label, hf.config.num_labels)
    batch = task_batch(name, TINY["vocab_size"], LENGTHS)
    with torch.no_grad():
        assert max_diff(name, back(**batch), hf(**batch), batch) == 0.0


def test_new_labels_reach_transformers_through_save_pretrained(tiny_checkpoint, tmp_path):
    id2label = {0: "NEG", 1: "NEU", 2: "POS"}
    with pytest.warns(UserWarning, match="no task head"):
        ours = bertfast.BertForSequenceClassification.from_pretrained(tiny_checkpoint, id2label=id2label)
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["id2label"] == {"0": "NEG", "1": "NEU", "2": "POS"}
    hf = hf_load("BertForSequenceClassification", str(tmp_path))
    assert (hf.config.id2label, hf.config.label2id) == (id2label, {"NEG": 0, "NEU": 1, "POS": 2})
    batch = padded_batch(TINY["vocab_size"], LENGTHS)
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, hf(**batch).logits, atol=LOGITS_ATOL, rtol=0)
    assert bertfast.BertForSequenceClassification.from_pretrained(tmp_path).config == ours.config


@pytest.mark.parametrize("name", TASK_CLASSES)
def test_from_hf_converts_each_task_model(name):
    hf = hf_task_model(name, 9, **TINY)
    ours = getattr(bertfast, name).from_hf(hf)
    assert ours.config.id2label == hf.config.id2label
    batch = task_batch(name, TINY["vocab_size"], LENGTHS)
    with torch.no_grad():
        assert max_diff(name, ours(**batch), hf(**batch), batch) <= LOGITS_ATOL


def test_classifier_dropout_defaults_to_the_hidden_dropout():
    config = bertfast.BertConfig(**TINY, hidden_dropout_prob=0.2)
    with torch.device("meta"):
        assert bertfast.BertForSequenceClassification(config).dropout.p == 0.2
        config.classifier_dropout = 0.5
        assert bertfast.BertForTokenClassification(config).dropout.p == 0.5
        assert bertfast.BertForMultipleChoice(config).dropout.p == 0.5


def half_precision_errors(name: str, dtype: torch.dtype, device: str, config: dict, lengths: list[int]):
    """(ours, transformers') max |diff| to transformers' fp32 outputs when both run in ``dtype``."""
    hf = hf_task_model(name, 9, **config).to(device)
    batch = {k: v.to(device) for k, v in task_batch(name, config.get("vocab_size", 30522), lengths).items()}
    with torch.no_grad():
        reference = hf(**batch)
        hf_half = hf.to(dtype)
        ours = getattr(bertfast, name).from_hf(hf_half)
        return max_diff(name, ours(**batch), reference, batch), max_diff(name, hf_half(**batch), reference, batch)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", TASK_CLASSES)
def test_half_precision_on_cpu_within_twice_transformers_error(name, dtype):
    ours, theirs = half_precision_errors(name, dtype, "cpu", TINY, LENGTHS)
    assert ours <= 2 * theirs + 1e-3, (ours, theirs)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", TASK_CLASSES)
def test_half_precision_on_gpu_within_twice_transformers_error(name, dtype):
    ours, theirs = half_precision_errors(name, dtype, "cuda", {}, [128, 77, 31, 128])
    assert ours <= 2 * theirs + 1e-3, (ours, theirs)


@pytest.mark.parametrize("name", TASK_CLASSES)
def test_triton_path_matches_torch_path_and_transformers(name, task_checkpoint, monkeypatch):
    """BERTFAST_BACKEND=triton: the Triton kernels (through the interpreter without CUDA), padding-free."""
    if ops.interpreting() is False and not torch.cuda.is_available():
        pytest.fail("conftest must set TRITON_INTERPRET=1 on machines without CUDA")
    path = task_checkpoint(name, 3)
    hf, ours = hf_load(name, path), getattr(bertfast, name).from_pretrained(path)
    batch = task_batch(name, TINY["vocab_size"], [7, 2], num_choices=2)
    with torch.no_grad():
        expected = hf(**batch)
        monkeypatch.setenv("BERTFAST_BACKEND", "torch")
        reference = ours(**batch)
        monkeypatch.setenv("BERTFAST_BACKEND", "triton")
        fused = ours(**batch)
    assert max_diff(name, fused, reference, batch) <= LOGITS_ATOL
    assert max_diff(name, fused, expected, batch) <= LOGITS_ATOL
