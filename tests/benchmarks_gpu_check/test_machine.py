"""benchmarks/gpu_check/machine.py: nvidia-smi's answer parsed, or the reason there is none."""
from __future__ import annotations

from benchmarks.gpu_check.machine import NVIDIA_SMI_FIELDS, machine, nvidia_smi
from tests.helpers import REPO_ROOT

ROW = "NVIDIA H200, 570.86.15, 143771, 1980, 1980, 2619, 3201, 95.12, 700.00, 31, P0"


def test_nvidia_smi_rows(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{ROW}'\necho '{ROW}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    gpus = nvidia_smi()["gpus"]
    assert len(gpus) == 2 and list(gpus[0]) == list(NVIDIA_SMI_FIELDS)
    assert gpus[0]["name"] == "NVIDIA H200" and gpus[0]["driver_version"] == "570.86.15" and gpus[0]["pstate"] == "P0"


def test_no_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_smi() == {"gpus": [], "unavailable": "nvidia-smi is not on PATH"}


def test_failing_nvidia_smi(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate' >&2\nexit 9\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    why = nvidia_smi()["unavailable"]
    assert why == "nvidia-smi exited with 9: NVIDIA-SMI has failed because it could not communicate"


def test_machine_names_the_packages():
    info = machine(REPO_ROOT)
    assert info["packages"]["torch"] and "pytest-benchmark" in info["packages"]
    assert len(info["git"].get("commit", "")) == 40 or "unavailable" in info["git"]
