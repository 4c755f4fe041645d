"""Exports shared by the ONNX test files: each (source, task, options) is exported once per test session."""
from __future__ import annotations

from typing import Any

from bertfast.export import ExportReport, export_onnx

_EXPORTS: dict[tuple, tuple[str, ExportReport]] = {}


def exported(tmp_path_factory: Any, source: str, task: str, **options: Any) -> tuple[str, ExportReport]:
    """(export directory, report) of ``export_onnx(source, ..., task=task, **options)``, cached."""
    key = (source, task, tuple(sorted(options.items())))
    if key not in _EXPORTS:
        out = tmp_path_factory.mktemp("export") / task
        _EXPORTS[key] = (str(out), export_onnx(source, out, task=task, **options))
    return _EXPORTS[key]
