"""benchmarks/gpu_check/files.py: the output folder's rules."""
from __future__ import annotations

import pytest

from benchmarks.gpu_check import files


def test_the_check_writes_at_most_eight_files():
    assert len(set(files.OUTPUTS)) == len(files.OUTPUTS) <= files.MAX_FILES


def test_prepare_out_dir_replaces_an_earlier_check_and_refuses_other_files(tmp_path):
    out = tmp_path / "new" / "gpu"
    files.prepare_out_dir(out)
    assert out.is_dir() and not list(out.iterdir())
    (out / files.RESULTS).write_text("{}")
    (out / ".summary.tmp.md").write_text("a write cut short")
    files.prepare_out_dir(out)
    assert not list(out.iterdir())
    (out / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="already holds mine.txt: give a new or empty folder"):
        files.prepare_out_dir(out)
    with pytest.raises(ValueError, match="is a file"):
        files.prepare_out_dir(out / "mine.txt")


def test_writes_leave_no_temporary_and_refuse_oversized_files(tmp_path, monkeypatch):
    files.write_json(tmp_path / "a.json", {"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    monkeypatch.setattr(files, "FILE_LIMIT", 10)
    with pytest.raises(ValueError, match="over the 0 MiB limit"):
        files.write_text(tmp_path / "a.json", "far more than ten bytes")
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'  # the old file whole


def test_a_long_log_keeps_its_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "LOG_LIMIT", 100)
    files.write_log(tmp_path / "steps.log", "h" * 60 + "m" * 1000 + "t" * 60)
    text = (tmp_path / "steps.log").read_text()
    assert text.startswith("h" * 50) and text.endswith("t" * 50) and "[... 1,020 bytes cut" in text
    files.write_log(tmp_path / "short.log", "short")
    assert (tmp_path / "short.log").read_text() == "short"
