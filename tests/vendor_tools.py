"""Fake vendor tools on disk: tests/fake_tools/replay under the tool's own name, playing a recorded output."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysgauge.sources._tools import Tool

REPLAY = Path(__file__).resolve().parent / "fake_tools" / "replay"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fake_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, output: Path, mode: str = ""
) -> Tool:
    """A `name` executable in tmp_path that prints `output` (or misbehaves per `mode`), found through Tool."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    link = directory / name
    if not link.exists():
        link.symlink_to(REPLAY)
    monkeypatch.setenv("FAKE_TOOL_OUTPUT", str(output))
    monkeypatch.setenv("FAKE_TOOL_MODE", mode)
    monkeypatch.setenv("FAKE_TOOL_PIDS", str(tmp_path / "pids"))
    return Tool.find(name, str(link))
