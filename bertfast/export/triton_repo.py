"""Forwarding module: the Triton repository writer is ``bertfast.serving.repository`` now. This name stays only
for the callers outside the layers work (``bertfast/cli.py``, ``benchmarks/bench_serve.py``,
``tests/export/test_onnx.py``, ``tests/export/test_export_kills.py``) until they import from there; then it goes.
It is the module itself (monkeypatching either name patches both)."""
import sys

from bertfast.serving import repository

sys.modules[__name__] = repository
