"""The one way sysgauge runs an external tool (rocm-smi, gc-info, apple_gpu_stats).

No shell; the executable is resolved once to an absolute path (PATH or a configured path) and never taken
from data; a timeout after which the whole process group is killed; stdout capped; stderr kept (its last
line is the reason `sysgauge detect` shows).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

MAX_OUTPUT = 8 * 2**20
_STDERR_KEPT = 4096


class ToolError(Exception):
    """The tool gave nothing usable; the message says why in one line."""


@dataclass(frozen=True)
class Tool:
    """An executable found once; `run` runs it with arguments sysgauge chose."""

    name: str
    path: str | None  # absolute, or None when not found

    @classmethod
    def find(cls, name: str, configured: str | None = None) -> Tool:
        candidate = configured or shutil.which(name)
        if candidate is None or not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            return cls(name, None)
        return cls(name, os.path.abspath(candidate))

    @property
    def missing_reason(self) -> str | None:
        return None if self.path is not None else f"{self.name} not found on PATH"

    def run(self, args: Sequence[str], timeout: float = 10.0, max_bytes: int = MAX_OUTPUT) -> str:
        """stdout as text. Raises ToolError when missing, failing, hung, or too talkative."""
        if self.path is None:
            raise ToolError(f"{self.name} not found on PATH")
        try:
            process = subprocess.Popen(
                [self.path, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills its children too
            )
        except OSError as exc:
            raise ToolError(f"{self.name} cannot be started: {exc.strerror or exc}") from None
        out, err, why = _collect(process, timeout, max_bytes)
        if why is not None:
            _kill_group(process)
            raise ToolError(f"{self.name} {why}")
        code = process.wait()
        if code != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ToolError(
                f"{self.name} exited with status {code}" + (f": {last[0][:200]}" if last[0] else "")
            )
        return out.decode(errors="replace")


def _collect(
    process: subprocess.Popen[bytes], timeout: float, max_bytes: int
) -> tuple[bytes, bytes, str | None]:
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, out)
    selector.register(process.stderr, selectors.EVENT_READ, err)
    open_streams = 2
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(out), bytes(err), f"did not finish within {timeout:g} s (killed)"
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                buffer: bytearray = key.data
                buffer += chunk
                if buffer is out and len(out) > max_bytes:
                    return bytes(out), bytes(err), f"printed more than {max_bytes} bytes (killed)"
                if buffer is err and len(err) > _STDERR_KEPT:
                    del err[: len(err) - _STDERR_KEPT]
    finally:
        selector.close()
        process.stdout.close()
        process.stderr.close()
    return bytes(out), bytes(err), None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
