"""The per-task contract table: every entry is served by a pipeline and returns what its specs say."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import bertfast
from bertfast import tasks
from bertfast.pipelines import PIPELINES
from bertfast.serving.contract import CONTRACTS, NUMPY_TYPES, contract_for, served_tasks

ROWS = {"text": ["The cat sat on the [MASK].", "A [MASK] of [MASK] things."],
        "text_pair": ["It purred.", "The end."],
        "question": ["Where did the cat sit?", "What is a group of things?"],
        "context": ["The cat sat on the mat all day long.", "A set of things is a group of things."],
        "query": ["cats", "groups"], "document": ["The cat sat on the mat.", "Stocks fell on Tuesday."]}
SERVED = ["feature-extraction", "fill-mask", "next-sentence", "question-answering", "rerank", "sentence-embedding",
          "sparse-embedding", "text-classification", "token-classification"]


@pytest.fixture(scope="module")
def checkpoints(tiny_vocab_checkpoint, sentiment_checkpoint, ner_checkpoint, qa_checkpoint,
                cross_encoder_checkpoint) -> dict[str, str]:
    """A checkpoint per served task (the pretraining one for the tasks that run its heads or its encoder)."""
    tasks = {"text-classification": sentiment_checkpoint, "token-classification": ner_checkpoint,
             "question-answering": qa_checkpoint, "rerank": cross_encoder_checkpoint}
    return {task: tasks.get(task, tiny_vocab_checkpoint) for task in SERVED}


def test_served_tasks_are_the_entries_that_have_a_pipeline():
    assert served_tasks() == SERVED
    assert all(task in PIPELINES and contract.task == task for task, contract in CONTRACTS.items())
    for contract in CONTRACTS.values():  # text in; inputs tokenized together are the first one or two
        assert {spec.data_type for spec in contract.inputs} == {"TYPE_STRING"}
        assert all(spec.dims == (1,) for spec in contract.inputs)
        assert contract.tokenized == tuple(spec.name for spec in contract.inputs)
        assert all(spec.doc for spec in (*contract.inputs, *contract.outputs))
        assert not any(spec.optional for spec in contract.inputs[:1])  # the first text is always sent
    assert [s.name for s in CONTRACTS["text-classification"].inputs if s.optional] == ["text_pair"]


def _outputs(task: str, checkpoint: str, inputs: dict[str, list[str]]):
    contract = contract_for(task)
    pipe = bertfast.pipeline(task, model=checkpoint)
    outputs = contract.run(pipe, inputs)
    assert list(outputs) == [spec.name for spec in contract.outputs]
    for spec in contract.outputs:
        array = outputs[spec.name]
        assert array.dtype == NUMPY_TYPES[spec.data_type], spec.name
        assert array.shape == (len(next(iter(inputs.values()))), *spec.resolved_dims(pipe.model.config)), spec.name
    return pipe, outputs


def _json(outputs: dict[str, np.ndarray], name: str = "result") -> list:
    return [json.loads(row[0]) for row in outputs[name]]


@pytest.mark.parametrize("task", SERVED)
def test_each_entry_returns_its_outputs_with_the_specs_types_and_dims(task, checkpoints):
    contract = contract_for(task)
    inputs = {spec.name: ROWS[spec.name] for spec in contract.inputs if not spec.optional}
    pipe, outputs = _outputs(task, checkpoints[task], inputs)
    if task in ("fill-mask", "sparse-embedding"):  # one JSON document per row: the pipeline's result for that text
        assert _json(outputs) == pipe(ROWS["text"])
    if task in ("feature-extraction", "sentence-embedding"):
        np.testing.assert_array_equal(outputs["embedding"], pipe(ROWS["text"]).numpy())
    if task == "next-sentence":
        expected = pipe(ROWS["text"], ROWS["text_pair"])
        assert [row[0].decode() for row in outputs["label"]] == [r["label"] for r in expected]
        np.testing.assert_allclose(outputs["logits"], [r["logits"] for r in expected], atol=1e-6, rtol=0)
    if task == "text-classification":
        assert _json(outputs) == pipe(ROWS["text"])
        expected = pipe(ROWS["text"], function_to_apply=None)  # top_k not given: the best label per text
        assert [r["label"] for r in expected] == [pipe.model.config.id2label[i] for i in outputs["scores"].argmax(1)]
        np.testing.assert_allclose(outputs["scores"].max(1), [r["score"] for r in expected], atol=1e-6, rtol=0)
        np.testing.assert_allclose(outputs["scores"].sum(1), 1.0, atol=1e-5)  # softmax over three labels
    if task == "token-classification":
        assert _json(outputs) == pipe(ROWS["text"], aggregation_strategy="simple")
        assert any(_json(outputs))  # the scaled head finds entities, so the comparison is not of empty lists
    if task == "question-answering":
        answers = _json(outputs)
        assert answers == pipe(question=ROWS["question"], context=ROWS["context"])
        assert all(a["answer"] == c[a["start"]:a["end"]] for a, c in zip(answers, ROWS["context"]))
    if task == "rerank":
        for i, (query, document) in enumerate(zip(ROWS["query"], ROWS["document"])):
            assert outputs["score"][i, 0] == pytest.approx(pipe(query, [document])[0]["score"], abs=1e-6)


def test_text_classification_scores_pairs_and_every_label_in_label_id_order(sentiment_checkpoint):
    pipe, outputs = _outputs("text-classification", sentiment_checkpoint,
                             {"text": ROWS["text"], "text_pair": ROWS["text_pair"]})
    assert _json(outputs) == pipe(ROWS["text"], ROWS["text_pair"])
    for row, ranked in zip(outputs["scores"], pipe(ROWS["text"], ROWS["text_pair"], top_k=3)):
        assert {r["label"]: pytest.approx(r["score"], abs=1e-6) for r in ranked} == {
            pipe.model.config.id2label[i]: float(score) for i, score in enumerate(row)}


def test_a_question_too_long_for_a_window_is_refused_before_the_model_runs(qa_checkpoint):
    contract = contract_for("question-answering")
    pipe = bertfast.pipeline("question-answering", model=qa_checkpoint)
    contract.check(pipe, {"question": "where?", "context": "here"}, [])  # fits: no error
    with pytest.raises(ValueError, match="more than max_question_len=64"):
        contract.check(pipe, {"question": "why " * 70, "context": "because"}, [])


def test_tasks_without_a_contract_are_named(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown task 'summarize'; served tasks: \['feature-extraction', "
                                         r"'fill-mask', 'next-sentence', 'question-answering', "):
        contract_for("summarize")
    entry = dataclasses.replace(tasks.get_task("feature-extraction"), name="sentence-similarity", serving=None)
    monkeypatch.setattr(tasks, "TASKS", (*tasks.TASKS, entry))  # a table entry with a pipeline, no serving part
    monkeypatch.setitem(tasks.BY_NAME, entry.name, entry)
    with pytest.raises(ValueError, match="'sentence-similarity' has a pipeline but no serving contract yet .*"
                                         "serving= to its entry in bertfast/tasks.py"):
        contract_for("sentence-similarity")
