"""bertfast.pipeline(): task and model checks."""
from __future__ import annotations

import pytest
import torch

import bertfast


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_a_missing_gpu_is_reported_before_anything_is_loaded(tmp_path):
    """No checkpoint at all: the device is checked first."""
    with pytest.raises(ValueError, match="CUDA is not available on this machine; use --device cpu"):
        bertfast.pipeline("fill-mask", model=str(tmp_path / "nothing-here"), device="cuda")
    with pytest.raises(ValueError, match="'cuda:x' is not a device name"):
        bertfast.pipeline("feature-extraction", model=str(tmp_path), device="cuda:x")
