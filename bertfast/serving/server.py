"""Triton Inference Server from the ``nvidia-pytriton`` wheel on a model repository, and ``bertfast.serve``.

The wheel ships the ``tritonserver`` binary, the Python backend and one backend stub per Python version; we run
that binary on a repository written by ``write_triton_repository(..., backend="python")``. (PyTriton's own
``Triton.bind`` proxy answers every request of a gathered batch with the same error when the callable raises,
so one malformed request would fail its well-formed neighbours; the Python backend answers each request on
its own.)

The stub embeds ``libpython3.X.so``, which the loader takes from the system's library folder unless told
otherwise; where this interpreter is another build of the same Python (pyenv, a venv of one) model start then
fails (``AttributeError: '_thread.RLock' object has no attribute '_recursion_count'``, or packages not found).
``server_environment`` points ``LD_LIBRARY_PATH`` at this interpreter's own ``sysconfig`` ``LIBDIR``.

The stub's interpreter is isolated (``PyConfig_InitIsolatedConfig``: PYTHONPATH and PYTHONHOME are ignored) and
takes its ``sys.executable``, prefix and site-packages from the first ``python3`` on PATH: from a venv that is
not activated it would see the base interpreter's packages ("No module named 'bertfast'"). ``stub_python_dir``
gives tritonserver's PATH a first folder whose ``python3`` is this interpreter: its own folder (a venv's bin/,
where pyvenv.cfg makes the venv's site-packages the stub's) or a private folder with a link to it.

tritonserver's output goes to a log file (a temporary one unless ``log_file`` is given, removed after a clean
exit); when it fails to start, ``startup_error`` reads the cause out of that log: a model's own exception
(``failed to load 'NAME' version 1: Internal: ModuleNotFoundError: ...``) or Triton's last error line.
"""
from __future__ import annotations

import filecmp
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from bertfast.atomic import recover_entries
from bertfast.serving.batching import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS
from bertfast.serving.repository import write_python_repository

STARTUP_TIMEOUT_S = 300.0  # model load included (a hub download may be part of it)
POLL_S = 0.2
KILL_GRACE_S = 30.0  # after the exit timeout, before SIGKILL
LOOPBACK = "127.0.0.1"  # the default address: this machine only; "0.0.0.0" listens on every address
ANY_ADDRESS = ("", "0.0.0.0", "::")
# "failed to load 'NAME' version 1: Internal: ModuleNotFoundError: No module named 'torch'\n\nAt:\n ..." (Triton
# quotes its log messages: a newline of the stub's traceback is the two characters \n)
LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<status>[A-Za-z ]+): (?P<error>.*?)"
                          r'(?:\\n|"?\s*$)', re.MULTILINE)
ERROR_LINE = re.compile(r'^(?:E\d{4} [\d:.]+ +\d+ \S+\] "(?P<logged>.*?)\s*"|error: (?P<fatal>.*?))\s*$', re.MULTILINE)
IMPORT_ERROR = re.compile(r"(ModuleNotFoundError|ImportError): ")
SUMMARY = "failed to load all models"  # Triton's last line after any model failure: the cause is logged before


class ServerStartError(OSError):
    """tritonserver could not be started, exited or never became ready; the message (one line) names the cause
    and the log file."""


def startup_error(log: str) -> str | None:
    """The cause of a failed start in tritonserver's ``log``, as one line: the first model that failed to load,
    with its own exception and what to do (``ModuleNotFoundError: No module named 'torch' while loading model
    'NAME'; install it into ...``), else the last error Triton logged; None when it logged none."""
    load = LOAD_FAILURE.search(log)
    if load is None:
        errors = [m["logged"] or m["fatal"] for m in ERROR_LINE.finditer(log)]
        causes = [e for e in errors if not e.endswith(SUMMARY)] or errors
        return causes[-1] if causes else None
    error = load["error"].strip()
    if load["status"] != "Internal":  # Triton refused the model (its config, say): no Python exception
        return f"{load['status']}: {error} while loading model '{load['model']}'"
    advice = (f"install it into {sys.prefix}, the environment of {sys.executable} that the models run in"
              if IMPORT_ERROR.match(error) else "the model's traceback is in the log")
    return f"{error} while loading model '{load['model']}'; {advice}"


def stub_python_dir(workspace: str) -> str:
    """A folder whose ``python3`` is this interpreter, to be first on tritonserver's PATH: the stub then runs this
    interpreter's environment (the folder of ``sys.executable`` when its ``python3`` is the same file, else a new
    ``workspace/python`` with a ``python3`` link; a venv needs its own folder, where its pyvenv.cfg is)."""
    folder = os.path.dirname(sys.executable)
    python3 = os.path.join(folder, "python3")
    if os.path.isfile(python3) and (os.path.samefile(python3, sys.executable)
                                    or filecmp.cmp(python3, sys.executable, shallow=False)):  # a venv's copies
        return folder
    if sys.prefix != sys.base_prefix:
        raise ServerStartError(f"{folder} has no python3 that is {sys.executable}: Triton's Python backend finds "
                               f"this virtual environment by the python3 first on PATH (make one: ln -s "
                               f"{os.path.basename(sys.executable)} {python3})")
    private = os.path.join(workspace, "python")
    os.makedirs(private, exist_ok=True)
    os.symlink(os.path.realpath(sys.executable), os.path.join(private, "python3"))
    return private


@dataclass(frozen=True)
class TritonDistribution:
    """The parts of the nvidia-pytriton wheel a server needs."""

    binary: str  # the tritonserver executable
    python_backend: str  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: str  # triton_python_backend_stub built for this interpreter's Python version
    libs: str  # the shared libraries the wheel bundles (CUDA runtime, protobuf, ...)

    @classmethod
    def find(cls) -> "TritonDistribution":
        try:
            from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path
        except ImportError:
            raise ImportError("serving needs nvidia-pytriton (its wheel ships tritonserver and the Python backend): "
                              "pip install 'bertfast[serve]'") from None
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = get_stub_path(version)
        if not stub.is_file():
            raise RuntimeError(f"nvidia-pytriton has no Python-backend stub for Python {version} "
                               f"({stub.parent.parent} holds {sorted(p.name for p in stub.parent.parent.iterdir())})")
        dist = get_root_module_path() / "tritonserver"
        return cls(str(dist / "bin" / "tritonserver"), str(dist / "backends" / "python"), str(stub),
                   str(get_libs_path()))


def server_environment(environ: Mapping[str, str], libs: str, python_dir: str) -> dict[str, str]:
    """tritonserver's environment: this interpreter's libpython first on the library path, the wheel's libraries
    after it, and ``python_dir`` (see ``stub_python_dir``) first on PATH."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    library_path = [libs]
    if libdir and soname and os.path.isfile(os.path.join(libdir, soname)):
        library_path.insert(0, libdir)
    else:
        warnings.warn(f"{sys.executable} has no shared {soname or 'libpython'} in {libdir}: the Python-backend stub "
                      f"will load the system's, which works only if it is the same build (use a Python built with "
                      f"--enable-shared)")
    env = dict(environ)
    for key, paths in (("LD_LIBRARY_PATH", library_path), ("PATH", [python_dir])):
        existing = [p for p in env.get(key, "").split(os.pathsep) if p]
        env[key] = os.pathsep.join(dict.fromkeys(paths + existing))
    return env


class TritonServer:
    """``tritonserver`` on a model repository with the wheel's Python backend. ``start()`` launches it and waits
    until every model is ready; ``stop()`` sends SIGTERM: Triton stops taking connections, finishes the requests
    in flight (waiting up to ``exit_timeout_s`` for them and for open HTTP connections) and exits 0.

    HTTP, gRPC and metrics listen on ``host``: the loopback address by default, "0.0.0.0" for every address.
    tritonserver's output goes to ``log_file`` (appended to), or to a temporary file that is removed after a
    clean exit and kept, and named in the ``ServerStartError``, when it fails."""

    def __init__(self, repository: str | os.PathLike, host: str = LOOPBACK, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, exit_timeout_s: int = 30,
                 log_file: str | os.PathLike | None = None):
        self.repository, self.host, self.exit_timeout_s = os.path.abspath(repository), host, exit_timeout_s
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.log_file = None if log_file is None else os.path.abspath(log_file)
        self.process: subprocess.Popen | None = None
        self._workspace: str | None = None
        self._temporary_log = log_file is None
        self._log_start = 0  # where this run's output begins in log_file
        self._failed = False

    def url(self, protocol: str) -> str:
        """``host:port`` of "http", "grpc" or "metrics" (the loopback address when listening on every address)."""
        host = LOOPBACK if self.host in ANY_ADDRESS else self.host
        return f"{host}:{self.ports[protocol]}"

    def command(self, backend_dir: str, binary: str) -> list[str]:
        return [binary, f"--model-repository={self.repository}", f"--backend-directory={backend_dir}",
                f"--http-address={self.host}", f"--grpc-address={self.host}", f"--metrics-address={self.host}",
                f"--http-port={self.ports['http']}", f"--grpc-port={self.ports['grpc']}",
                f"--metrics-port={self.ports['metrics']}", f"--exit-timeout-secs={self.exit_timeout_s}",
                "--disable-auto-complete-config"]

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> "TritonServer":
        if self.process is not None:
            raise RuntimeError("this server was already started")
        dist = TritonDistribution.find()
        recover_entries(self.repository)  # a model a kill left mid-swap: its whole version, before Triton reads it
        self._workspace = tempfile.mkdtemp(prefix="bertfast-triton-")
        try:
            backend_dir = os.path.join(self._workspace, "backends")
            os.makedirs(os.path.join(backend_dir, "python"))
            for source in (os.path.join(dist.python_backend, "libtriton_python.so"),
                           os.path.join(dist.python_backend, "triton_python_backend_utils.py"), dist.stub):
                os.symlink(source, os.path.join(backend_dir, "python", os.path.basename(source)))
            env = server_environment(os.environ, dist.libs, stub_python_dir(self._workspace))
            if self._temporary_log:
                fd, self.log_file = tempfile.mkstemp(prefix="bertfast-tritonserver-", suffix=".log")
                os.close(fd)
            with open(self.log_file, "ab") as log:  # a session of its own: a terminal's Ctrl-C reaches only us
                self._log_start = log.tell()
                self.process = subprocess.Popen(self.command(backend_dir, dist.binary), stdout=log,
                                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except BaseException:
            self._clean()
            if self._temporary_log and self.log_file is not None:
                os.remove(self.log_file)
                self.log_file = None
            raise
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._clean()
                raise self._start_error(f"tritonserver exited with code {code} before its models were ready")
            try:
                with urllib.request.urlopen(f"http://{self.url('http')}/v2/health/ready", timeout=POLL_S * 5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_S)
        self._failed = True
        self.stop()
        raise self._start_error(f"tritonserver was not ready after {timeout_s:g} s")

    def _start_error(self, what: str) -> ServerStartError:
        """One line: the cause read from this run's log (a model's own exception first), what to do, the log."""
        self._failed = True  # keep the log
        with open(self.log_file, encoding="utf-8", errors="replace") as f:
            f.seek(self._log_start)
            cause = startup_error(f.read())
        return ServerStartError("; ".join(filter(None, [cause, f"{what}, its log: {self.log_file}"])))

    def terminate(self) -> None:
        """Send SIGTERM (drain, then exit) if the server is running."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the server to exit (SIGKILL once ``timeout_s`` has passed); its exit code."""
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._clean()
        if code == 0 and self._temporary_log and not self._failed and os.path.exists(self.log_file):
            os.remove(self.log_file)
        return code

    def stop(self) -> int:
        """SIGTERM and wait: in-flight requests are answered first. The exit code (0 after a clean drain)."""
        if self.process is None:
            return 0
        self.terminate()
        return self.wait(self.exit_timeout_s + KILL_GRACE_S)

    def _clean(self) -> None:
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(model: str | os.PathLike, task: str, name: str | None = None, *, dtype: str = "float32",
          device: str = "cpu", quantize: str | None = None, host: str = LOOPBACK, http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int = 8002, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
          max_queue_delay_us: int = 100, instances: int = 1, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
          threads: int = 0, exit_timeout_s: int = 30, log_file: str | os.PathLike | None = None) -> int:
    """Serve ``model`` (checkpoint directory or hub id) for ``task`` on Triton Inference Server until SIGTERM or
    SIGINT, then drain; return tritonserver's exit code (0 after a clean drain).

    The model is named ``name`` (default: the task): ``POST /v2/models/<name>/infer``. ``max_batch_size`` bounds
    the rows of a request and of a gathered batch, ``max_queue_delay_us`` how long the dynamic batcher waits
    to gather, ``max_batch_tokens`` the real tokens of one model call; ``instances`` model copies run at once,
    each with ``threads`` torch threads on the CPU (0: the cores divided by the instances). HTTP, gRPC and
    metrics listen on ``host``: the loopback address by default, "0.0.0.0" for every address (a container).
    tritonserver's output goes to ``log_file`` (default: a temporary file, kept when it fails); a model that
    fails to load raises ``ServerStartError`` with the model's own exception.
    """
    with tempfile.TemporaryDirectory(prefix="bertfast-serve-") as workspace:
        repository = os.path.join(workspace, "repository")
        model_dir = write_python_repository(model, repository, task, name=name, max_batch_size=max_batch_size,
                                            instance_count=instances, max_queue_delay_us=max_queue_delay_us,
                                            dtype=dtype, device=device, quantize=quantize,
                                            max_batch_tokens=max_batch_tokens, threads=threads,
                                            copy_checkpoint=False, check_load=False)  # tritonserver loads it now
        server = TritonServer(repository, host, http_port, grpc_port, metrics_port, exit_timeout_s, log_file)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # the only thread that may set handlers
            previous = {s: signal.signal(s, lambda *_: server.terminate()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.start()
            print(f"bertfast serve: {task} as model {os.path.basename(model_dir)!r}: HTTP {server.url('http')}, "
                  f"gRPC {server.url('grpc')}, metrics http://{server.url('metrics')}/metrics; "
                  f"tritonserver's log: {server.log_file}", flush=True)
            return server.wait()
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
