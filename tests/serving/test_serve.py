"""``bertfast serve`` and ``TritonServer`` where users stand: the console script run as a systemd unit or a
container entrypoint runs it (a PATH without its virtualenv, a cwd outside the repository, the loopback default)
with its SIGTERM drain, and models that fail to load reported in one line with their own exception; without a
server, how a failed start is read out of tritonserver's log and which ``python3`` the backend stub is given."""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

import bertfast
from bertfast.cli import main
from bertfast.serving import ServerStartError, TritonServer
from bertfast.serving.server import startup_error, stub_python_dir
from tests.helpers import REPO_ROOT
from tests.serving.test_server import ATOL, PAIRS, START_TIMEOUT_S, TEXTS, infer, rows


def _pending(metrics_url: str, model: str) -> int:
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(rf'nv_inference_pending_request_count{{model="{model}",version="1"}} (\S+)', text)
    return int(float(match.group(1))) if match else 0


def listening_addresses(port: int) -> set:
    """The local addresses a TCP socket listens on at ``port`` (Linux's /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN; the address is 32-bit words, each
                    raw = bytes.fromhex(address)  # in host (little-endian) byte order
                    found.add(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))
    return found


def is_loopback(address) -> bool:
    return address.is_loopback or (address.version == 6 and bool(address.ipv4_mapped)
                                   and address.ipv4_mapped.is_loopback)


def test_console_script_without_its_venv_on_path_serves_on_loopback_and_sigterm_drains(tiny_vocab_checkpoint,
                                                                                        free_ports, tmp_path):
    """``bertfast serve`` as a systemd unit or a container entrypoint runs it: the console script by its absolute
    path, PATH without the virtualenv's bin/, nothing activated, a cwd outside the repository, no --host."""
    http, grpc, metrics = free_ports(3)
    scripts = os.path.dirname(sys.executable)
    command = [os.path.join(scripts, "bertfast"), "serve", tiny_vocab_checkpoint, "--task", "next-sentence",
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
               "--max-queue-delay-us", "5000000", "--exit-timeout-secs", "20", "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=os.pathsep.join(p for p in ("/usr/bin", "/bin") if p != scripts), TMPDIR=str(tmp_path))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert REPO_ROOT not in cwd.resolve().parents
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"bertfast serve: next-sentence" not in (tmp_path / "serve.log").read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        ready = (tmp_path / "serve.log").read_text()
        assert f"HTTP 127.0.0.1:{http}, gRPC 127.0.0.1:{grpc}, metrics http://127.0.0.1:{metrics}/metrics" in ready
        for port in (http, grpc, metrics):  # bound to loopback alone, not to every address
            assert listening_addresses(port) and all(map(is_loopback, listening_addresses(port))), port
        triton_log = re.search(r"tritonserver's log: (\S+)", ready).group(1)
        assert os.path.dirname(triton_log) == str(tmp_path)
        urls = {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}"}
        results: dict[int, object] = {}

        def one(i: int) -> None:
            protocol = ("http", "grpc")[i % 2]
            request = {"text": rows([TEXTS[i % 3]]), "text_pair": rows([PAIRS[i % 3]])}
            try:
                results[i] = infer(urls[protocol], protocol, "next-sentence", request, ["logits"])["logits"]
            except InferenceServerException as e:
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        for _ in range(200):  # the batcher holds them for 5 s: wait until all four are queued
            if _pending(f"127.0.0.1:{metrics}", "next-sentence") == 4:
                break
            time.sleep(0.02)
        assert _pending(f"127.0.0.1:{metrics}", "next-sentence") == 4
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        assert process.wait(timeout=60) == 0
        expected = bertfast.pipeline("next-sentence", model=tiny_vocab_checkpoint)(TEXTS, PAIRS)
        for i in range(4):
            np.testing.assert_allclose(results[i][0], expected[i % 3]["logits"], atol=ATOL, rtol=0)
        with pytest.raises(OSError):  # gone: nothing listens any more
            socket.create_connection(("127.0.0.1", http), timeout=2).close()
        assert not os.path.exists(triton_log)  # a clean exit leaves no temporary log behind
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        log.close()


@pytest.fixture
def temporary_logs(monkeypatch, tmp_path):
    """Temporary files (tritonserver's own log among them) in this test's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_checkpoint_that_fails_to_load_is_one_line_with_its_own_exception(capsys, free_ports, temporary_logs,
                                                                           tiny_vocab_checkpoint):
    broken = temporary_logs / "no-weights"
    broken.mkdir()
    for name in os.listdir(tiny_vocab_checkpoint):  # its config and tokenizer, not its weights
        if not name.endswith((".safetensors", ".bin")):
            os.symlink(os.path.join(tiny_vocab_checkpoint, name), broken / name)
    ports = [str(p) for p in free_ports(3)]
    code = main(["serve", str(broken), "--task", "feature-extraction", "--http-port", ports[0], "--grpc-port",
                 ports[1], "--metrics-port", ports[2], "--threads", "1"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    match = re.fullmatch(r"bertfast serve: error: FileNotFoundError: no weights found for '(.*)': looked for "
                         r"model\.safetensors.* while loading model 'feature-extraction'; the model's traceback is "
                         r"in the log; tritonserver exited with code 1 before its models were ready, its log: "
                         r"(\S+)\n", err)
    assert match and match.group(1) == str(broken), err
    log = match.group(2)
    assert os.path.dirname(log) == str(temporary_logs)
    with open(log, encoding="utf-8") as f:
        assert "FileNotFoundError: no weights found" in f.read()  # kept, with the stub's traceback


def test_a_model_that_cannot_import_a_module_says_which_and_where_to_install_it(free_ports, temporary_logs):
    model = temporary_logs / "repository" / "broken"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
                                        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                                        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    (model / "1" / "model.py").write_text("import not_installed_anywhere  # noqa: F401\n")
    http, grpc, metrics = free_ports(3)
    server = TritonServer(model.parent, http_port=http, grpc_port=grpc, metrics_port=metrics)
    try:
        with pytest.raises(ServerStartError) as error:
            server.start(timeout_s=START_TIMEOUT_S)
    finally:
        assert server.stop() == 1
    message = str(error.value)
    assert message == (f"ModuleNotFoundError: No module named 'not_installed_anywhere' while loading model 'broken'; "
                       f"install it into {sys.prefix}, the environment of {sys.executable} that the models run in; "
                       f"tritonserver exited with code 1 before its models were ready, its log: {server.log_file}")
    assert os.path.isfile(server.log_file)


LOAD_FAILED = ('E1207 01:45:55.885404 3624 model_lifecycle.cc:642] "failed to load \'feature-extraction\' version 1: '
               'Internal: ModuleNotFoundError: No module named \'torch\'\\n\\nAt:\\n  /repo/1/model.py(3): '
               '<module>\\n"\n')


@pytest.mark.parametrize("log, cause", [
    (LOAD_FAILED + "error: creating server: Internal - failed to load all models\n",
     f"ModuleNotFoundError: No module named 'torch' while loading model 'feature-extraction'; install it into "
     f"{sys.prefix}, the environment of {sys.executable} that the models run in"),
    ('E1207 02:00:50.010603 10960 model_lifecycle.cc:642] "failed to load \'cfg\' version 1: Invalid argument: '
     'instance group cfg_0 of model cfg has kind KIND_GPU but no GPUs are available"\n',
     "Invalid argument: instance group cfg_0 of model cfg has kind KIND_GPU but no GPUs are available while loading "
     "model 'cfg'"),
    ('E1207 02:00:34.229423 10834 model_repository_manager.cc:1460] "Poll failed for model directory \'cfg\': failed '
     'to read text proto from /repo/cfg/config.pbtxt"\nerror: creating server: Internal - failed to load all models\n',
     "Poll failed for model directory 'cfg': failed to read text proto from /repo/cfg/config.pbtxt"),
    ('E1207 01:48:31.019193 4785 server.cc:241] "CudaDriverHelper has not been initialized."\n'
     'E1207 01:48:31.287107 4785 main.cc:257] "failed to start HTTP service: Unavailable - Socket '
     '\'127.0.0.1:18700\' already in use "\n', "failed to start HTTP service: Unavailable - Socket '127.0.0.1:18700' "
                                               "already in use"),
    ("error: creating server: Internal - failed to stat file /nowhere\n",
     "creating server: Internal - failed to stat file /nowhere"),
    ('I1207 01:48:31.233183 4785 metrics.cc:770] "Collecting CPU metrics"\n', None),
], ids=["model exception", "refused config", "unreadable config", "port in use", "fatal error", "no error"])
def test_startup_error_reads_the_cause_out_of_tritonservers_log(log, cause):
    assert startup_error(log) == cause


def test_the_stub_gets_this_interpreters_folder_or_a_python3_link_to_it(monkeypatch, tmp_path):
    here = stub_python_dir(str(tmp_path))
    assert os.path.samefile(os.path.join(here, "python3"), sys.executable)
    assert here == os.path.dirname(sys.executable)  # a venv's own bin/, where pyvenv.cfg is found
    lone = tmp_path / "opt" / "python3.11"  # an interpreter whose folder has no python3
    lone.parent.mkdir()
    lone.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sys, "executable", str(lone))
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # not a venv
    private = stub_python_dir(str(tmp_path / "workspace"))
    assert private == str(tmp_path / "workspace" / "python")
    assert os.readlink(os.path.join(private, "python3")) == os.path.realpath(sys.executable)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))  # a venv: a link elsewhere would lose its packages
    with pytest.raises(ServerStartError, match="has no python3 that is .*python3.11: Triton's Python backend"):
        stub_python_dir(str(tmp_path / "other"))
