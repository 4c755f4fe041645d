"""What a wheel installs: exactly the top-level packages `bertfast` and `kernels`. Our `kernels` shadows an unrelated
PyPI package of that name: transformers must not care."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import bertfast

REPO = os.path.dirname(os.path.dirname(bertfast.__file__))
# Local state that is not part of the repository (and would only slow the copy down).
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks",
                                     ".venv", ".whl", "*.onnx")


def test_wheel_installs_exactly_bertfast_and_kernels(tmp_path):
    """Build the wheel of a copy of the repository (the build leaves build/ and *.egg-info behind, which must
    not land in the checkout) and read its file list."""
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
               "-w", str(wheels), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = wheels.glob("bertfast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = set(archive.read(top_level).decode().split())
    installed = {n.split("/")[0].removesuffix(".py") for n in names if ".dist-info/" not in n}
    assert installed == declared == {"bertfast", "kernels"}
    bench_modules = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "bertfast", "bench", "*.py"))}
    assert {"bertfast/bench/__init__.py", "bertfast/bench/runner.py", "bertfast/bench/options.py"} <= bench_modules
    assert bench_modules <= set(names)
    assert "bertfast/data/corpus.txt" in names and "kernels/launch.py" in names


def test_transformers_imports_and_runs_with_our_kernels_package():
    code = textwrap.dedent("""
        import kernels, torch, transformers
        from transformers.utils import is_kernels_available
        assert kernels.__file__.startswith(%r), kernels.__file__
        assert not is_kernels_available(), "transformers mistook our kernels package for the hub-kernels one"
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=20)
        model = transformers.BertForMaskedLM(config).eval()
        print(tuple(model(input_ids=torch.ones(1, 5, dtype=torch.long)).logits.shape))
    """ % os.path.join(REPO, "kernels"))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(1, 5, 50)")


def test_runtime_never_imports_transformers():
    code = "import sys, bertfast, bertfast.cli; print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_runtime_and_its_bench_never_import_the_benchmarks_suite():
    code = ("import sys, bertfast, bertfast.cli, bertfast.bench.runner; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_an_editable_install_of_a_clone_named_bertfast_imports_from_its_parent_folder(tmp_path):
    """A clone folder named `bertfast`, installed editable (PEP 660, as `pip install -e` does), with Python started
    in the folder above it: `bertfast` must be the clone's package, not the clone folder itself imported as an
    empty namespace package (then `bertfast.pipeline` is an AttributeError)."""
    clone = tmp_path / "work" / "bertfast"
    shutil.copytree(REPO, clone, ignore=NOT_SOURCES)
    build = "import sys; from setuptools import build_meta; build_meta.build_editable(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", build, str(tmp_path / "wheels")], cwd=clone, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "wheels").glob("bertfast-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    find = ("import importlib.util, site, sys; site.addsitedir(sys.argv[1]); "
            "print(importlib.util.find_spec('bertfast').origin)")
    # -S: no site-packages, so an editable install of this checkout (a path entry too) cannot answer instead
    result = subprocess.run([sys.executable, "-S", "-c", find, str(tmp_path / "site")], cwd=clone.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(clone / "bertfast" / "__init__.py")
