"""Fixtures of the serving tests: a tiny checkpoint long enough for 256-token texts, and free loopback ports."""
from __future__ import annotations

import shutil
import socket
from typing import Callable

import pytest

from tests.helpers import TINY, hf_pretraining_model


@pytest.fixture(scope="session")
def tiny_long_checkpoint(tmp_path_factory, tiny_vocab_checkpoint) -> str:
    """``tiny_vocab_checkpoint`` (the real bert-base-uncased vocabulary) with 512 positions instead of 64."""
    path = tmp_path_factory.mktemp("tiny_long") / "checkpoint"
    shutil.copytree(tiny_vocab_checkpoint, path)  # the tokenizer files; config and weights are replaced below
    hf_pretraining_model(**{**TINY, "vocab_size": 30522, "max_position_embeddings": 512}).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def free_ports() -> Callable[[int], list[int]]:
    """``free_ports(n)``: n distinct loopback ports that were free a moment ago (bound to port 0, then closed)."""

    def ports(n: int) -> list[int]:
        sockets = [socket.socket() for _ in range(n)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return [s.getsockname()[1] for s in sockets]
        finally:
            for s in sockets:
                s.close()

    return ports
