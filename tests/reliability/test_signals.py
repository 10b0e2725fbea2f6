"""`sysgauge run` and signals, beyond tests/test_cli.py (which covers a forwarded SIGTERM the command
handles, and Ctrl-C on `sysgauge monitor`): SIGINT forwarded exactly once when not on a terminal and not at
all when the terminal already delivered it, 128 + signal when the command dies of one, and no orphans."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.reliability.helpers import record, wait_until

pytestmark = pytest.mark.cli

RUN = [sys.executable, "-m", "sysgauge", "run", "--interval", "0.2", "--window", "1", "--sources", "process"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYSGAUGE_"))}


def command(tmp_path: Path, on_sigint: str = "count") -> list[str]:
    """A Python command that writes its pid to ready.pid once its handlers are set.

    on_sigint="count": count SIGINTs for 0.5 s after the first, write the count to sigints, exit 5.
    on_sigint="default": Python's own handling (KeyboardInterrupt, then death by SIGINT)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        received = []
        if {on_sigint == "count"!r}:
            signal.signal(signal.SIGINT, lambda *_: received.append(time.monotonic()))
        open({str(tmp_path / "ready.pid")!r}, "w").write(str(os.getpid()))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
            if received and time.monotonic() - received[0] > 0.5:
                open({str(tmp_path / "sigints")!r}, "w").write(str(len(received)))
                sys.exit(5)
        """
    )
    return [sys.executable, "-c", script]


def command_pid(tmp_path: Path) -> int:
    marker = tmp_path / "ready.pid"
    wait_until(lambda: marker.exists() and bool(marker.read_text()), 30.0, "the command never started")
    return int(marker.read_text())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids to kill after the test, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(args: list[str]) -> subprocess.Popen[bytes]:
    # stdin is not a terminal, and a session of its own keeps pytest's terminal out of it.
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env(),
        start_new_session=True,
    )


def run_command(
    tmp_path: Path, spawned: list[int], on_sigint: str = "count"
) -> tuple[subprocess.Popen[bytes], int]:
    """`sysgauge run --no-summary -- <command>`, once the command is ready: (sysgauge, the command's pid)."""
    proc = start([*RUN, "--no-summary", "--", *command(tmp_path, on_sigint)])
    spawned.append(proc.pid)
    child = command_pid(tmp_path)
    spawned.append(child)
    return proc, child


def test_sigint_is_forwarded_exactly_once_when_not_on_a_terminal(tmp_path: Path, spawned: list[int]) -> None:
    proc, child = run_command(tmp_path, spawned)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    assert code == 5, proc.stderr.read() if proc.stderr else code
    assert (tmp_path / "sigints").read_text() == "1"
    assert gone(child)


@pytest.mark.parametrize(
    ("case", "expected"),
    [("command-kills-itself", 128 + 9), ("sigterm-default", 128 + 15), ("sigint-default", 128 + 2)],
)
def test_a_command_dying_of_a_signal_gives_128_plus_the_signal(
    tmp_path: Path, spawned: list[int], case: str, expected: int
) -> None:
    proc, child = run_command(tmp_path, spawned, on_sigint="default")
    if case == "command-kills-itself":
        os.kill(child, signal.SIGKILL)  # as the OOM killer would
    else:
        proc.send_signal(signal.SIGTERM if case == "sigterm-default" else signal.SIGINT)
    assert proc.wait(timeout=30) == expected
    assert gone(child)


def test_ctrl_c_on_a_terminal_reaches_the_command_once(tmp_path: Path) -> None:
    """The terminal sends SIGINT to its whole foreground group, the command included: sysgauge must not
    forward it a second time (a second SIGINT interrupts Python programs' cleanup)."""
    args = [*RUN, "--", *command(tmp_path)]
    env = clean_env()
    pid, leader = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.execve(args[0], args, env)
    output = b""
    try:
        command_pid(tmp_path)
        time.sleep(0.2)
        os.write(leader, b"\x03")  # Ctrl-C
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything on it ended
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(leader)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert os.waitstatus_to_exitcode(status) == 5, output.decode(errors="replace")
    assert (tmp_path / "sigints").read_text() == "1", "the command got Ctrl-C twice"
    assert b"mean" in output and b"peak" in output  # the summary still printed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_command_does_not_outlive_a_killed_sysgauge(tmp_path: Path, spawned: list[int]) -> None:
    proc, child = run_command(tmp_path, spawned)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        wait_until(lambda: gone(child), 2.0, f"the command {child} outlived sysgauge")
    finally:
        record("signals-orphan", command_alive_after_sysgauge_sigkill=not gone(child))
