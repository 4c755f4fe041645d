"""bertfast/bench/report.py: machine names in result file names, results written together or not at all."""
from __future__ import annotations

import os

import pytest

from bertfast.bench.report import slugify
from tests.helpers import assert_umask_modes


def test_machine_slugs():
    assert slugify("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") == "intel-xeon-gold-6248"
    assert slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slugify("AMD EPYC 7763 64-Core Processor") == "amd-epyc-7763-64-core-processor"


def test_results_are_written_together_or_not_at_all(tmp_path, monkeypatch, umask):
    from bertfast.bench import report

    monkeypatch.setattr(report, "markdown", lambda r: "# table\n")
    monkeypatch.setattr(report, "plot", lambda r, path: open(path, "wb").write(b"png"))
    results = {"machine": {"slug": "test-cpu"}, "cases": []}
    paths = report.write(results, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)
    assert [open(p, "rb").read() for p in paths[1:]] == [b"# table\n", b"png"]
    for path in paths:
        assert_umask_modes(path, umask)

    def broken(r, path):
        raise RuntimeError("matplotlib failed")

    monkeypatch.setattr(report, "plot", broken)
    again = tmp_path / "again"
    with pytest.raises(RuntimeError, match="matplotlib failed"):
        report.write(results, str(again))
    assert os.listdir(again) == []  # no JSON or markdown without its plot, no staging folder left
