"""The per-task contract table: every entry is served by a pipeline and returns what its specs say."""
from __future__ import annotations

import json

import numpy as np
import pytest

import bertfast
from bertfast.pipelines import PIPELINES
from bertfast.pipelines.feature_extraction import FeatureExtractionPipeline
from bertfast.serving.contract import CONTRACTS, NUMPY_TYPES, contract_for, served_tasks

ROWS = {"text": ["The cat sat on the [MASK].", "A [MASK] of [MASK] things."],
        "text_pair": ["It purred.", "The end."]}


def test_served_tasks_are_the_entries_that_have_a_pipeline():
    assert served_tasks() == ["feature-extraction", "fill-mask", "next-sentence"]
    assert all(task in PIPELINES and contract.task == task for task, contract in CONTRACTS.items())
    for contract in CONTRACTS.values():  # text in; inputs tokenized together are the first one or two
        assert {spec.data_type for spec in contract.inputs} == {"TYPE_STRING"}
        assert all(spec.dims == (1,) for spec in contract.inputs)
        assert contract.tokenized == tuple(spec.name for spec in contract.inputs)
        assert all(spec.doc for spec in (*contract.inputs, *contract.outputs))


@pytest.mark.parametrize("task", ["feature-extraction", "fill-mask", "next-sentence"])
def test_each_entry_returns_its_outputs_with_the_specs_types_and_dims(task, tiny_vocab_checkpoint):
    contract = contract_for(task)
    pipe = bertfast.pipeline(task, model=tiny_vocab_checkpoint)
    outputs = contract.run(pipe, {spec.name: ROWS[spec.name] for spec in contract.inputs})
    assert list(outputs) == [spec.name for spec in contract.outputs]
    for spec in contract.outputs:
        array = outputs[spec.name]
        assert array.dtype == NUMPY_TYPES[spec.data_type], spec.name
        assert array.shape == (2, *spec.resolved_dims(pipe.model.config)), spec.name
    if task == "fill-mask":  # one JSON document per row: the pipeline's result for that text
        assert [json.loads(row[0]) for row in outputs["result"]] == pipe(ROWS["text"])
    if task == "next-sentence":
        expected = pipe(ROWS["text"], ROWS["text_pair"])
        assert [row[0].decode() for row in outputs["label"]] == [r["label"] for r in expected]
        np.testing.assert_allclose(outputs["logits"], [r["logits"] for r in expected], atol=1e-6, rtol=0)


def test_tasks_without_a_contract_are_named(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown task 'summarize'; served tasks: \['feature-extraction', "
                                         r"'fill-mask', 'next-sentence'\]"):
        contract_for("summarize")
    monkeypatch.setitem(PIPELINES, "sentence-similarity", FeatureExtractionPipeline)  # a pipeline, no entry
    with pytest.raises(ValueError, match="'sentence-similarity' has a pipeline but no serving contract yet .*"
                                         "CONTRACTS in bertfast/serving/contract.py"):
        contract_for("sentence-similarity")
