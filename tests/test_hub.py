"""Name resolution: local directories, hub ids from the HF cache, offline rules and their error messages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import huggingface_hub
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError

import bertfast
from bertfast.hub import resolve_file
from tests.helpers import TINY, hf_pretraining_model


def run_offline(code: str, cache: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=cache, HF_HOME=cache)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(bertfast.__file__)), timeout=120)


def test_missing_directory_and_missing_config_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        bertfast.BertModel.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_a_local_file_absent_but_not_required_is_none(tiny_checkpoint):
    assert resolve_file(tiny_checkpoint, "pytorch_model.bin", required=False) is None
    assert resolve_file(tiny_checkpoint, "config.json") == os.path.join(tiny_checkpoint, "config.json")


@pytest.mark.parametrize("name", ["./nope", "/no/such/dir", "org/name/extra", "~/nope", "config_file"])
def test_a_name_that_looks_like_a_path_never_reaches_the_hub(name, tmp_path, monkeypatch):
    """A mistyped local path (or an existing file that is not a directory) is reported as such, offline."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config_file").write_text("{}")

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the hub was asked for {args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    with pytest.raises(FileNotFoundError, match="is not a directory: pass an existing local checkpoint directory"):
        resolve_file(name, "config.json", required=False)


def test_hub_id_resolved_from_the_hf_cache_offline(tiny_checkpoint, tmp_path):
    snapshot = tmp_path / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_checkpoint, snapshot)
    (tmp_path / "models--acme--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-bert" / "refs" / "main").write_text("a" * 40)
    result = run_offline("""
        import bertfast
        model = bertfast.BertForPreTraining.from_pretrained("acme/tiny-bert")
        print(model.config.hidden_size, model.num_parameters())
    """, str(tmp_path))
    assert result.returncode == 0, result.stderr
    expected = hf_pretraining_model(**TINY).num_parameters()
    assert result.stdout.split() == [str(TINY["hidden_size"]), str(expected)]


def test_hub_id_offline_and_not_cached_says_how_to_pass_a_directory(tmp_path):
    result = run_offline("""
        import bertfast
        bertfast.BertModel.from_pretrained("bert-base-uncased")
    """, str(tmp_path))
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr
    assert "pass a local directory holding config.json" in result.stderr


class _Session:
    """huggingface_hub.get_session() stand-in: HEAD either answers or fails like an unreachable host."""

    def __init__(self, reachable: bool):
        self.reachable, self.calls = reachable, 0

    def head(self, url, timeout):
        self.calls += 1
        assert timeout <= 5, "the reachability check must not wait long"
        if not self.reachable:
            raise ConnectionError("[Errno -2] Name or service not known")


def fake_hub(monkeypatch, reachable: bool, tmp_path) -> tuple[_Session, list]:
    """Nothing cached; a download returns a file when the hub is reachable; a download attempted while it is
    not fails the test (huggingface_hub would retry for ~25 s there)."""
    session, downloads = _Session(reachable), []

    def download(name, filename, local_files_only=False):
        if local_files_only:
            raise LocalEntryNotFoundError("not in the cache")
        assert reachable, "downloaded although the hub is unreachable: huggingface_hub would retry for ~25 s"
        downloads.append(filename)
        (tmp_path / filename).write_text("{}")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: session)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    return session, downloads


def test_an_unreachable_hub_fails_at_once_with_the_offline_message(monkeypatch, tmp_path):
    session, _ = fake_hub(monkeypatch, reachable=False, tmp_path=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"the hub could not be reached .*\(e\.g\. `hf download acme/bert`\) "
                                                r"or pass a local directory") as caught:
        resolve_file("acme/bert", "config.json")
    assert session.calls == 1 and "huggingface-cli" not in str(caught.value)


def test_a_reachable_hub_is_asked_for_the_file(monkeypatch, tmp_path):
    session, downloads = fake_hub(monkeypatch, reachable=True, tmp_path=tmp_path)
    assert resolve_file("acme/bert", "config.json") == str(tmp_path / "config.json")
    assert session.calls == 1 and downloads == ["config.json"]
