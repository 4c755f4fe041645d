"""The dtype names a model is loaded or run in (``resolve_dtype``, beside the config)."""
from __future__ import annotations

import pytest
import torch

from bertfast.config import BertConfig, resolve_dtype


@pytest.mark.parametrize("name, dtype", [(None, torch.float32), (torch.float16, torch.float16),
                                         ("float32", torch.float32), ("fp32", torch.float32),
                                         ("float", torch.float32), ("float16", torch.float16),
                                         ("fp16", torch.float16), ("half", torch.float16),
                                         ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name) is dtype


def test_unknown_dtype_name():
    with pytest.raises(ValueError, match="unsupported dtype 'float8'"):
        resolve_dtype("float8")


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", r"config.json: a config must be a JSON object \(field name -> value\), got a list"),
    ('{"vocab_size": null}', r"config.json: config.vocab_size must be a positive integer, got None"),
    ('{"hidden_size": "768"}', r"config.json: config.hidden_size must be a positive integer, got '768'"),
    ('{"num_hidden_layers": true}', r"config.num_hidden_layers must be a positive integer, got True"),
    ('{"hidden_dropout_prob": "0.1"}', r"config.hidden_dropout_prob must be a finite number in \[0, 1\), got '0.1'"),
    ('{"layer_norm_eps": null}', r"config.layer_norm_eps must be a finite number > 0, got None"),
    ('{"layer_norm_eps": -1e-12}', r"config.layer_norm_eps must be a finite number > 0"),
    ('{"initializer_range": "x"}', r"config.initializer_range must be a finite number >= 0"),
    ('{"pad_token_id": 30522}', r"config.pad_token_id must be an integer in \[0, vocab_size=30522\)"),
    ('{"hidden_act": ["gelu"]}', r"config.hidden_act must be a string, got \['gelu'\]"),
    ('{"tie_word_embeddings": "yes"}', r"config.tie_word_embeddings must be true or false"),
    ('{"architectures": "BertModel"}', r"config.architectures must be a list of class names"),
    ('{"vocab_size": ', r"config.json is not valid JSON"),
    (b"\xff\xfe{}", r"config.json is not UTF-8 text"),
])
def test_a_malformed_config_json_names_the_file_and_the_field(content, message, tmp_path):
    """Checked at load (from_pretrained reads config.json through from_json_file), not at the first forward."""
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as caught:
        BertConfig.from_json_file(path)
    assert str(path) in str(caught.value)
