"""Layers only point down (tests/import_graph.py has the layer map), and ``import bertfast`` is lazy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import bertfast
from tests import import_graph
from tests.helpers import REPO_ROOT

APP_PACKAGES = ("bertfast.training", "bertfast.serving", "bertfast.export", "bertfast.bench")


def test_every_module_has_a_layer():
    unplaced = []
    for module in import_graph.module_files():
        try:
            import_graph.layer_of(module)
        except ValueError as e:
            unplaced.append(str(e))
    assert not unplaced, "\n".join(unplaced)


def test_an_unplaced_module_is_named_with_the_fix():
    with pytest.raises(ValueError, match=r"module elsewhere\.thing has no layer: add it to LAYERS in tests/"):
        import_graph.layer_of("elsewhere.thing")


def test_no_import_circles():
    assert import_graph.circles(import_graph.import_graph()) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    up = import_graph.upward(import_graph.import_graph())
    assert not up, "\n".join(map(import_graph._where, up))


def test_the_graph_reads_relative_and_function_level_imports(tmp_path):
    modules = {"bertfast.serving.a": str(tmp_path / "a.py"), "bertfast.serving": "", "bertfast.ops": "",
               "bertfast": ""}
    (tmp_path / "a.py").write_text("from .. import ops\nimport os\n\ndef f():\n    import bertfast\n")
    found = list(import_graph.imports_of("bertfast.serving.a", modules["bertfast.serving.a"], modules))
    assert found == [import_graph.Import("bertfast.serving.a", "bertfast.ops", 1, True),
                     import_graph.Import("bertfast.serving.a", "bertfast", 5, False)]
    assert import_graph.upward(found) == found[1:]  # apps -> the package facade; core is below apps
    loop = [import_graph.Import("x", "y", 1, True), import_graph.Import("y", "x", 1, False)]
    assert import_graph.circles(loop) == [["x", "y"]]


def test_import_bertfast_loads_no_training_serving_export_or_bench_module():
    code = "import sys, json, bertfast; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True,
                                       text=True).stdout)
    assert "bertfast" in loaded
    assert [m for m in loaded if m.startswith(APP_PACKAGES)] == []


@pytest.mark.parametrize("name", bertfast.__all__)
def test_every_public_name_resolves_to_its_module(name):
    value = getattr(bertfast, name)
    assert value.__name__ == name
    assert name in dir(bertfast)


def test_a_submodule_is_an_attribute_and_a_missing_name_an_attribute_error():
    assert bertfast.ops.backend_for is not None
    with pytest.raises(AttributeError, match="module 'bertfast' has no attribute 'no_such_name'"):
        bertfast.no_such_name  # noqa: B018
