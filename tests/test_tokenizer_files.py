"""bertfast/tokenizer_files.py: a vocab.txt is refused at load when it cannot tokenize every text (the tokenizer
itself is compared with transformers in tests/test_tokenizer.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import bertfast
from bertfast.tokenizer_files import load_vocab


def test_a_vocab_without_unk_is_refused_at_load_not_at_the_first_unknown_word(minilm_dir, tmp_path):
    lines = Path(minilm_dir, "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert load_vocab(os.path.join(minilm_dir, "vocab.txt"))["[UNK]"] == 100
    path = tmp_path / "vocab.txt"
    path.write_text("".join(f"{line}\n" for line in lines if line != "[UNK]"), encoding="utf-8")
    message = rf"{path} has no \[UNK\] line, the token of unknown words .*: add that line"
    with pytest.raises(ValueError, match=message):
        load_vocab(path)
    with pytest.raises(ValueError, match=message):
        bertfast.BertTokenizer(path)
    with pytest.raises(ValueError, match=message):
        bertfast.BertTokenizer.from_pretrained(tmp_path)  # a folder with vocab.txt alone
    assert "[UNK]" not in load_vocab(path, unk_token="[SEP]")  # where another unknown token is named


def test_the_configured_unknown_token_is_the_one_a_vocab_must_hold(tmp_path):
    """A vocab.txt-only tokenizer whose unk_token is not "[UNK]" loads when the vocabulary holds that token."""
    path = tmp_path / "vocab.txt"
    path.write_text("".join(f"{t}\n" for t in ["<unk>", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "the", "cat"]),
                    encoding="utf-8")
    tok = bertfast.BertTokenizer(path, unk_token="<unk>")
    assert tok("the dog")["input_ids"] == [1, 5, 0, 2]
    with pytest.raises(ValueError, match=r"has no \[UNK\] line"):
        bertfast.BertTokenizer(path)


def test_a_tokenizer_json_without_its_unknown_token_is_refused_at_load(minilm_dir, tmp_path):
    """The same rule for a tokenizer.json: its WordPiece model's unk_token must be in its vocabulary."""
    import json

    data = json.loads(Path(minilm_dir, "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["unk_token"] = "[NOT-IN-VOCAB]"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}: its unknown-word token '\[NOT-IN-VOCAB\]' is not in its vocabulary"):
        bertfast.BertTokenizer(tokenizer_file=path)
