"""Real parts the tests need (a compiler, node_exporter, Go for the Collector): skip without them, except
under CI=true, where a missing part is a failure."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: every part must be installed)")
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the part has not exited in 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
