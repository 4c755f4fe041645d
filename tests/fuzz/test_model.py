"""Fuzz: random shapes, padding patterns (right, left, in the middle, all padding), id and mask dtypes and token
types through every CPU path of the model, against transformers at the real tokens."""
from __future__ import annotations

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

import bertfast
from bertfast import ops
from bertfast_kernels.launch import triton_installed
from tests.helpers import HIDDEN_ATOL, TINY, assert_close, fuzz

PATTERNS = ("full", "right", "left", "middle", "all_padding")
PATHS = ("padding_free", "padded", "attentions")


@pytest.fixture(scope="module")
def models():
    """transformers' BertModel (eager attention: it can return attentions) and ours with its weights."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY)
    config._attn_implementation = "eager"
    hf = transformers.BertModel(config).eval()
    return hf, bertfast.BertModel.from_hf(hf).eval()


@st.composite
def batches(draw, max_batch: int = 4, max_seq: int = 12) -> dict[str, torch.Tensor]:
    batch, seq = draw(st.integers(1, max_batch)), draw(st.integers(1, max_seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(batch):
        pattern = draw(st.sampled_from(PATTERNS))
        real = draw(st.integers(1, seq))
        if pattern == "right":
            mask[row, real:] = 0
        elif pattern == "left":
            mask[row, : seq - real] = 0
        elif pattern == "middle":
            start = draw(st.integers(0, seq - real))
            mask[row, start:start + real] = 0
        elif pattern == "all_padding":
            mask[row] = 0
    seed = draw(st.integers(0, 2 ** 16))
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (batch, seq), generator=generator) * mask  # padding: id 0
    types = torch.randint(0, 2, (batch, seq), generator=generator) * mask
    id_dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    mask_dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.bool]))
    return {"input_ids": ids.to(id_dtype), "attention_mask": mask.to(mask_dtype), "token_type_ids": types.to(id_dtype)}


def check(models, batch: dict[str, torch.Tensor], path: str) -> None:
    hf, ours = models
    ours.padding_free = path != "padded"
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = hf(**{k: v.long() for k, v in batch.items()}, output_attentions=path == "attentions")
        actual = ours(**batch, output_attentions=path == "attentions")
    assert_close(actual.last_hidden_state[real], expected.last_hidden_state[real], HIDDEN_ATOL)
    assert not actual.last_hidden_state[~real].any(), "padding positions must be exactly zero"
    first_real = real[:, 0]  # the pooler reads position 0; where that is padding, transformers' value is arbitrary
    assert_close(actual.pooler_output[first_real], expected.pooler_output[first_real], HIDDEN_ATOL)
    if path == "attentions":
        for a, e in zip(actual.attentions, expected.attentions, strict=True):
            rows = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, S, S): real queries and keys
            assert_close(a[rows.expand_as(a)], e[rows.expand_as(e)], HIDDEN_ATOL)


@fuzz(30)
@given(batch=batches(), path=st.sampled_from(PATHS))
def test_the_torch_paths_match_transformers_at_real_tokens(models, batch, path):
    check(models, batch, path)


@pytest.mark.skipif(not triton_installed(), reason="Triton is not installed")
@fuzz(4)
@given(batch=batches(max_batch=3, max_seq=8))
def test_the_triton_kernels_through_the_interpreter_match_transformers(models, batch):
    with ops.force_backend("triton"):
        check(models, batch, "padding_free")
