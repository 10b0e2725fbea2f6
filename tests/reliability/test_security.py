"""What sysgauge may run and write: no shell anywhere, tool paths taken as one file name, nothing written
but the recording the user asked for. (URLs only http/https, redirects, response caps and tokens kept out
of messages are tests/sources/test_openmetrics.py; neuron-monitor's private config is
tests/sources/test_trainium.py.)"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysgauge.sources._tools import Tool
from tests.httpfake import Reply, serve
from tests.nvml_fake.scenario import FakeNvml, to_lines
from tests.reliability.helpers import L4_TEXT, two_gpus
from tests.vendor_tools import REPLAY

SYSGAUGE_RUN = [sys.executable, "-m", "sysgauge", "run", "--interval", "0.2", "--window", "1"]
SRC = Path(__file__).resolve().parents[2] / "src" / "sysgauge"
# Running other programs is reviewed where it happens; a new place must be added here on purpose.
STARTS_PROCESSES = {"cli.py", "sources/_tools.py", "sources/trainium.py"}
PROCESS_STARTERS = {"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
SHELL_FUNCTIONS = {"system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp"}


def calls_in(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def called_name(call: ast.Call) -> tuple[str, str]:
    """(module or object, attribute) of `x.y(...)`; ("", name) of `name(...)`."""
    function = call.func
    if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
        return function.value.id, function.attr
    if isinstance(function, ast.Name):
        return "", function.id
    return "", ""


def test_no_program_is_started_through_a_shell() -> None:
    starters: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        module = str(path.relative_to(SRC))
        for call in calls_in(path):
            owner, name = called_name(call)
            shell = [k for k in call.keywords if k.arg == "shell"]
            assert not shell, f"{module}:{call.lineno} passes shell="
            assert not (owner == "os" and (name in SHELL_FUNCTIONS or name.startswith("spawn"))), (
                f"{module}:{call.lineno} calls os.{name}"
            )
            if owner == "subprocess" and name in PROCESS_STARTERS:
                starters.add(module)
                assert name not in ("getoutput", "getstatusoutput"), f"{module}:{call.lineno}: a shell"
                first = call.args[0] if call.args else None
                # A command line as one string would need a shell to be split.
                assert not isinstance(first, ast.Constant | ast.JoinedStr), f"{module}:{call.lineno}"
    assert starters == STARTS_PROCESSES


def test_a_tool_path_full_of_shell_syntax_is_run_as_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "bin; touch pwned; $(touch pwned2) `touch pwned3`"
    directory.mkdir()
    (directory / "rocm-smi").symlink_to(REPLAY)
    output = tmp_path / "recorded.txt"
    output.write_text('{"card0": {"GPU use (%)": "7"}} $(touch pwned4); touch pwned5\n')
    tool = Tool.find("rocm-smi", str(directory / "rocm-smi"))
    assert tool.missing_reason is None
    monkeypatch.setenv("FAKE_TOOL_OUTPUT", str(output))
    monkeypatch.setenv("FAKE_TOOL_PIDS", str(tmp_path / "pids"))
    monkeypatch.delenv("FAKE_TOOL_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tool.run(["--showuse", "--json"]) == output.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([directory.name, "recorded.txt"])


def test_a_run_writes_nothing_but_the_recording_it_was_asked_for(
    fake_nvml_library: FakeNvml, tmp_path: Path
) -> None:
    """`sysgauge run` with every source that can start here (host, process tree, two GPUs on the fake
    driver, an OpenMetrics endpoint) and a JSON-lines recording; its home, temp and working directories
    start empty and must hold only the recording afterwards."""
    home, temp, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for directory in (home, temp, work):
        directory.mkdir()
    scenario = tmp_path / "scenario.txt"
    scenario.write_text(to_lines(two_gpus()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYSGAUGE_", "XDG_"))}
    env.update(
        HOME=str(home),
        TMPDIR=str(temp),
        LD_LIBRARY_PATH=str(fake_nvml_library.path.parent),
        FAKE_NVML_SCENARIO=str(scenario),
        PYTHONDONTWRITEBYTECODE="1",  # Python's own bytecode cache is not sysgauge writing
    )
    command = [sys.executable, "-c", "import time; time.sleep(1.5)"]
    with serve(Reply(body=L4_TEXT)) as endpoint:
        result = subprocess.run(
            [*SYSGAUGE_RUN, "--openmetrics", f"dcgm={endpoint.url}", "--jsonl", "run.jsonl", "--", *command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for d in (home, temp, work) for p in d.rglob("*"))
    assert written == ["work/run.jsonl"]
    recording = (work / "run.jsonl").read_text()
    for name in ("hw.gpu.utilization", "dcgm_fi_dev_gpu_util", "process.cpu.time", "system.memory.usage"):
        assert f'"{name}"' in recording, f"{name} missing: that source did not run"
