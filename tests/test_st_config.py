"""bertfast/st_config.py on broken sentence-transformers folders: each is a ValueError (or FileNotFoundError) naming
the file and what to fix, never an AttributeError, a bare JSONDecodeError or a silent fall-back to mean pooling.
(The folders that work are compared with sentence-transformers in tests/pipelines/test_feature_extraction.py.)"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from bertfast.cli import main
from bertfast.st_config import read_sentence_config

MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


@pytest.fixture
def folder(tmp_path, minilm_dir):
    """all-MiniLM-L6-v2's sentence-transformers files (no weights: read_sentence_config reads none)."""
    shutil.copytree(f"{minilm_dir}/1_Pooling", tmp_path / "st" / "1_Pooling")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        shutil.copy(f"{minilm_dir}/{name}", tmp_path / "st")
    assert read_sentence_config(tmp_path / "st").pooling == ("mean",)
    return tmp_path / "st"


def write_modules(folder, modules) -> None:
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize("modules", [{"a": 1}, [], ["Pooling"], [{"idx": 0}], [{**MODULES[0], "path": 3}],
                                     [{**MODULES[0], "idx": "0"}]],
                         ids=["object", "empty", "strings", "no_type", "path_a_number", "idx_a_string"])
def test_a_modules_json_of_the_wrong_shape_names_the_file(folder, modules):
    write_modules(folder, modules)
    with pytest.raises(ValueError, match=rf"{folder}/modules.json must be a non-empty JSON list of modules"):
        read_sentence_config(folder)


@pytest.mark.parametrize("name", ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json"])
@pytest.mark.parametrize("content", [b'[{"idx": 0', b"\xff\xfe[]"], ids=["truncated", "not_utf8"])
def test_a_file_that_is_not_json_names_itself(folder, name, content):
    (folder / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"{folder}/{name} is not valid UTF-8 JSON .*re-download the model folder"):
        read_sentence_config(folder)


def test_a_pooling_config_that_is_not_an_object_names_the_file(folder):
    (folder / "1_Pooling" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"1_Pooling/config.json must hold a JSON object"):
        read_sentence_config(folder)


def test_a_missing_pooling_folder_is_an_error_not_mean_pooling(folder):
    shutil.rmtree(folder / "1_Pooling")
    with pytest.raises(FileNotFoundError, match=r"modules.json names the Pooling module folder '1_Pooling', but "
                                                r"1_Pooling/config.json is not there"):
        read_sentence_config(folder)


@pytest.mark.parametrize("path", ["../../../etc", "1_Pooling/../../outside", "/etc"])
def test_a_module_path_outside_the_model_folder_is_refused(folder, path):
    (folder.parent / "outside").mkdir()
    (folder.parent / "outside" / "config.json").write_text('{"pooling_mode_cls_token": true}')  # readable, if read
    write_modules(folder, [MODULES[0], {**MODULES[1], "path": path}, MODULES[2]])
    with pytest.raises(ValueError, match=rf"names module folders outside the model folder \({re.escape(path)}\): "
                                         rf"refused"):
        read_sentence_config(folder)


def test_the_embed_command_says_it_in_one_line(folder, minilm_dir, capsys):
    shutil.copytree(minilm_dir, folder / "model")
    write_modules(folder / "model", {"a": 1})
    assert main(["embed", "hi", "--model", str(folder / "model"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "modules.json must be a non-empty JSON list" in err
