"""bertfast.pipeline(): task and model checks."""
from __future__ import annotations

import pytest
import torch

import bertfast
from bertfast.pipelines import PIPELINES


def test_pipeline_construction_errors(minilm_dir, tiny_vocab_checkpoint):
    with pytest.raises(ValueError, match="unknown task 'summarization'"):
        bertfast.pipeline("summarization", model=tiny_vocab_checkpoint)
    with pytest.raises(bertfast.CheckpointError, match=r"lacks .*cls\.predictions"):
        bertfast.pipeline("fill-mask", model=minilm_dir)
    model = bertfast.BertModel.from_pretrained(minilm_dir)
    with pytest.raises(ValueError, match="pass tokenizer="):
        bertfast.pipeline("feature-extraction", model=model)
    with pytest.raises(TypeError, match="needs a BertForMaskedLM"):
        bertfast.pipeline("fill-mask", model=model, tokenizer=minilm_dir)


@pytest.mark.parametrize("task", sorted(PIPELINES))
def test_every_task_takes_max_length_and_batch_size(task, tiny_vocab_checkpoint):
    head = {"num_labels": 1} if task == "rerank" else {"allow_missing_weights": True}  # a random task head
    pipe = bertfast.pipeline(task, model=tiny_vocab_checkpoint, max_length=8, batch_size=2, **head)
    assert (pipe.max_length, pipe.batch_size) == (8, 2)
    batches = pipe._encode(["a long text that goes on and on " * 4, "b", "c"])
    assert [len(b["index"]) for b in batches] == [2, 1]
    assert max(b["input_ids"].shape[1] for b in batches) == 8
    with pytest.raises(ValueError, match="max_length must be between 1 and the model's max_position_embeddings"):
        bertfast.pipeline(task, model=tiny_vocab_checkpoint, max_length=0, **head)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        bertfast.pipeline(task, model=tiny_vocab_checkpoint, batch_size=0, **head)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_a_missing_gpu_is_reported_before_anything_is_loaded(tmp_path):
    """No checkpoint at all: the device is checked first."""
    with pytest.raises(ValueError, match="CUDA is not available on this machine; use --device cpu"):
        bertfast.pipeline("fill-mask", model=str(tmp_path / "nothing-here"), device="cuda")
    with pytest.raises(ValueError, match="'cuda:x' is not a device name"):
        bertfast.pipeline("feature-extraction", model=str(tmp_path), device="cuda:x")
