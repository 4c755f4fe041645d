"""Where users stand: the installed console script and `import bertfast` from a folder outside the checkout, next to
transformers and the hub-kernels distribution (which owns the top-level name `kernels`; ours installs as
`bertfast_kernels`); a wheel in a fresh virtualenv; an editable install of a clone named `bertfast`.

Every check runs in a subprocess of this interpreter (the virtualenv CI made, never activated) with PATH stripped of
its folder, as a service or a container entrypoint starts it."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

import bertfast

REPO = os.path.dirname(os.path.dirname(os.path.realpath(bertfast.__file__)))
# Local state that is not part of the repository (and would only slow the copy down).
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks",
                                     ".venv", ".whl", "*.onnx", ".hypothesis")
BARE_PATH = "/usr/bin:/bin"  # no virtualenv's bin/: the console script is called by its absolute path

# In one process: transformers with the hub's `kernels`, bertfast agreeing with it, our Triton kernels interpreted.
ONE_PROCESS = textwrap.dedent("""
    import importlib.metadata, os, sys
    import torch, transformers, kernels
    import bertfast
    from transformers.utils import is_kernels_available
    hub = importlib.metadata.distribution("kernels")
    assert os.path.realpath(kernels.__file__) == os.path.realpath(hub.locate_file("kernels/__init__.py")), (
        "`kernels` is not the hub-kernels package: " + kernels.__file__)
    assert is_kernels_available(), "transformers does not see the hub-kernels package"
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37)
    torch.manual_seed(0)
    reference = transformers.BertModel(config).eval()
    ours = bertfast.BertModel.from_hf(reference).eval()
    ids = torch.randint(0, 99, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    diff = (got[real] - expected[real]).abs().max().item()
    assert diff <= 1e-5, diff
    from bertfast_kernels.launch import interpreting
    from bertfast_kernels.layer_norm import layer_norm, layer_norm_ref
    assert interpreting(), "TRITON_INTERPRET=1 did not reach the kernels"
    x, w, b = torch.randn(7, 33), torch.randn(33), torch.randn(33)
    torch.testing.assert_close(layer_norm(x, w, b, 1e-12), layer_norm_ref(x, w, b, 1e-12), atol=1e-5, rtol=1e-5)
    import bertfast_kernels.layer_norm as module
    print(os.path.realpath(bertfast.__file__))
    print(os.path.realpath(module.__file__))
    print(f"max |diff| {diff:.1e}")
""")


def run(command: list[str], cwd: str | os.PathLike, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PATH": BARE_PATH, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TRITON_INTERPRET": "1", **env}
    environ.pop("VIRTUAL_ENV", None)
    environ.pop("PYTHONPATH", None)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def console_script(python: str | os.PathLike) -> str:
    return os.path.join(os.path.dirname(python), "bertfast")


def check_installed(python: str | os.PathLike, cwd: str | os.PathLike) -> list[str]:
    """The console script and the one-process check with ``python``; the realpaths of bertfast and a kernel module."""
    assert run([console_script(python), "--version"], cwd).stdout.strip() == f"bertfast {bertfast.__version__}"
    lines = run([str(python), "-c", ONE_PROCESS], cwd).stdout.split("\n")
    assert lines[2].startswith("max |diff|"), lines
    return lines[:2]


@pytest.mark.parametrize("where", ["outside", "repository"])
def test_console_script_and_transformers_with_hub_kernels_in_one_process(where, tmp_path):
    """Outside the checkout the hub's `kernels` came first and `import bertfast` failed; from the repository root ours
    came first and transformers failed. Now both import everywhere, and bertfast is this checkout."""
    cwd = tmp_path if where == "outside" else REPO
    package, kernel = check_installed(sys.executable, cwd)
    assert package == os.path.join(REPO, "bertfast", "__init__.py")
    assert kernel == os.path.join(REPO, "kernels", "layer_norm.py")


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the repository (the build leaves build/ and *.egg-info behind, which must not land in
    the checkout), built as pip builds it for a user (an isolated build environment)."""
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)], tmp_path, 600)
    [wheel] = wheels.glob("bertfast-*.whl")
    return wheel


def test_a_wheel_in_a_fresh_virtualenv_holds_bertfast_and_bertfast_kernels_and_runs_outside(tmp_path):
    """The wheel installs exactly `bertfast` and `bertfast_kernels` (never a top-level `kernels`, which would write
    into the hub-kernels distribution's files), and passes the same checks from a fresh virtualenv. Its
    dependencies come from this environment through a path entry, so the test needs no download."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = set(archive.read(top_level).decode().split())
    installed = {n.split("/")[0].removesuffix(".py") for n in names if ".dist-info/" not in n}
    assert installed == declared == {"bertfast", "bertfast_kernels"}
    bench_modules = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "bertfast", "bench", "*.py"))}
    assert {"bertfast/bench/__init__.py", "bertfast/bench/runner.py", "bertfast/bench/options.py"} <= bench_modules
    assert bench_modules <= set(names)
    kernel_files = {f"bertfast_kernels/{os.path.basename(p)}" for p in glob.glob(os.path.join(REPO, "kernels", "*.py"))}
    assert "bertfast_kernels/launch.py" in kernel_files and kernel_files <= set(names)
    assert "bertfast/data/corpus.txt" in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp_path)
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(site, "zz_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    package, kernel = check_installed(python, tmp_path)
    assert package == os.path.realpath(os.path.join(site, "bertfast", "__init__.py"))
    assert kernel == os.path.realpath(os.path.join(site, "bertfast_kernels", "layer_norm.py"))


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
    empty namespace package (then `bertfast.pipeline` is an AttributeError); `bertfast_kernels` is the clone's
    kernels/ folder."""
    clone = tmp_path / "work" / "bertfast"
    shutil.copytree(REPO, clone, ignore=NOT_SOURCES)
    build = "import sys; from setuptools import build_meta; build_meta.build_editable(sys.argv[1])"
    run([sys.executable, "-c", build, str(tmp_path / "wheels")], clone)
    [wheel] = (tmp_path / "wheels").glob("bertfast-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    find = ("import importlib.util, os, site, sys; site.addsitedir(sys.argv[1]); "
            "print(os.path.realpath(importlib.util.find_spec('bertfast').origin)); "
            "print(os.path.realpath(importlib.util.find_spec('bertfast_kernels.launch').origin))")
    # -S: no site-packages, so an editable install of this checkout (a path entry too) cannot answer instead
    result = run([sys.executable, "-S", "-c", find, str(tmp_path / "site")], clone.parent, 120)
    assert result.stdout.split() == [str(clone / "bertfast" / "__init__.py"), str(clone / "kernels" / "launch.py")]
