"""Serving on Triton Inference Server: the per-task text contract (``contract``), the served model behind it
(``batching``), the Python-backend model (``backend``), the model repositories Triton reads (``repository``:
``bertfast.write_triton_repository``), the server process and ``bertfast.serve`` (``server``), and a load generator for tests and benchmarks (``load``).

The package is ``serving`` because ``bertfast.serve`` is the function: one name cannot be both."""
from bertfast.serving.server import ServerStartError, TritonServer, serve

__all__ = ["ServerStartError", "TritonServer", "serve"]
