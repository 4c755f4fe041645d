"""The --quick plan: its case list (the headline comparison), where its files go, its printed lines. No timings."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from bertfast.bench import options, report
from bertfast.bench.providers import REGISTRY
from bertfast.bench.runner import SILENCED_LOGS, first_lines, plan, run_from_args, settings_from_args
from bertfast.bench.workloads import build_workloads
from tests.bench.test_runner import parse


def test_quick_plan_is_the_headline_comparison():
    settings = settings_from_args(parse("--quick", "--device", "cpu"))
    providers = {name: REGISTRY[name]() for name in settings.providers}
    runs, skipped = plan(providers, settings)
    names = [p.name for p in runs[torch.float32]]
    assert names == ["bertfast-torch", "bertfast-int8", "transformers-eager", "onnxruntime-optimized",
                     "onnxruntime-int8"]
    assert {p.precision for p in runs[torch.float32]} == {None, "int8"}  # fp32 and int8 of each library
    assert {s["provider"] for s in skipped} == set(REGISTRY) - set(names)
    workloads = build_workloads(settings.batches, settings.seqs, settings.mixed, 512, settings.seed)
    # one full-length and one mixed-length workload
    assert [(w.name, w.mixed) for w in workloads] == [("b4-s128", False), ("b4-mixed", True)]
    assert workloads[0].real_tokens == 4 * 128 and workloads[1].real_tokens < 4 * 128
    assert settings.out_dir == options.DEFAULT_OUT == "bertfast-results" and not Path(settings.out_dir).is_absolute()


def test_full_runs_every_provider_on_the_whole_grid():
    full = settings_from_args(parse("--full", "--device", "cpu"))
    assert full.providers == list(REGISTRY) and not full.quick and full.batches == list(options.FULL.batches)


def test_first_line_names_the_cpu_and_its_flags_and_fits_the_terminal():
    text = first_lines(settings_from_args(parse("--quick", "--device", "cpu")))
    assert text.startswith("bertfast bench (quick): " + report.cpu_name())
    assert all(flag in text for flag in report.cpu_info().flags) and "results -> bertfast-results" in text
    assert max(map(len, text.splitlines())) <= report.LINE_WIDTH


def test_quick_run_writes_its_files_to_out_and_prints_narrow_lines(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --out is relative to the working directory
    args = parse("--quick", "--device", "cpu", "--model", str(tiny_checkpoint), "--seq", "8",
                 "--providers", "bertfast-torch,transformers-eager")
    result = run_from_args(args)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "bertfast-results").iterdir())
    stem = f"bertfast-results/{result['machine']['slug']}-"
    assert len(files) == 3 and all(f.startswith(stem) for f in files)
    assert {Path(f).suffix for f in files} == {".json", ".md", ".png"}
    [json_file] = (tmp_path / "bertfast-results").glob("*.json")
    saved = json.loads(json_file.read_text())
    assert saved["settings"]["quick"] and {r["provider"] for r in saved["results"]} == {"bertfast-torch",
                                                                                        "transformers-eager"}
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bertfast bench (quick): ")
    assert sum(line.startswith("[case] ") for line in out) == len(saved["results"]) == 4
    assert [line for line in out if len(line) > report.LINE_WIDTH] == []


def test_onnxruntime_pre_processing_advice_is_silenced(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("bertfast.bench.runner.run", lambda settings: logging.warning(SILENCED_LOGS[0] + " x")
                        or logging.warning("kept"))
    monkeypatch.setattr("bertfast.bench.report.write", lambda result, out_dir: [])
    monkeypatch.setattr("bertfast.bench.report.terminal", lambda result: "")
    with caplog.at_level(logging.WARNING):
        run_from_args(parse("--quick", "--device", "cpu", "--model", str(tiny_checkpoint)))
    assert [r.getMessage() for r in caplog.records] == ["kept"]
    assert not logging.getLogger().filters  # the filter is gone after the run
