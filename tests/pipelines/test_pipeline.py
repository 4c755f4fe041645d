"""bertfast.pipeline(): task and model checks."""
from __future__ import annotations

import pytest

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
