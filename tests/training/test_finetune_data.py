"""bertfast/training/finetune_data.py reading training files: every malformed file is a ValueError naming the file
(and the line) and the fix, never a UnicodeDecodeError without a path nor rows trained on with fields out of place.
(The features and batches are checked against transformers in tests/training/test_finetune.py.)"""
from __future__ import annotations

import pytest

from bertfast.cli import main
from bertfast.training.finetune_data import read_rows


@pytest.mark.parametrize("extension, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_a_row_with_more_fields_than_the_header_is_an_error(extension, delimiter, tmp_path):
    path = tmp_path / f"train{extension}"
    path.write_text(delimiter.join(["text", "label"]) + "\n" + delimiter.join(["fine", "pos"]) + "\n"
                    + delimiter.join(["good", "but long", "pos"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path} line 3 has 3 fields but the header names 2 \(text, label\): quote "
                                         r"a field that holds the delimiter, or fix the row"):
        read_rows(path)
    path.write_text('text,label\n"good, but long",pos\n', encoding="utf-8")
    if extension == ".csv":  # quoted, the delimiter is text
        assert read_rows(path) == [{"text": "good, but long", "label": "pos"}]


@pytest.mark.parametrize("extension", [".csv", ".jsonl"])
def test_a_file_that_is_not_utf8_names_itself(extension, tmp_path):
    path = tmp_path / f"train{extension}"
    rows = "text,label\ncafé,pos\n" if extension == ".csv" else '{"text": "café", "label": "pos"}\n'
    path.write_bytes(rows.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path} is not UTF-8 text \('utf-8' codec can't decode byte 0xe9.*\): save "
                                         r"it as UTF-8"):
        read_rows(path)


def test_the_finetune_command_says_it_in_one_line(tiny_vocab_checkpoint, tmp_path, capsys):
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncafé,pos\nbad,neg\n".encode("latin-1"))
    assert main(["finetune", "--model", tiny_vocab_checkpoint, "--train", str(path), "--eval", str(path), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path} is not UTF-8 text" in err
