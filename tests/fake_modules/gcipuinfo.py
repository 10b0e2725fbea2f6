"""A stand-in for Graphcore's `gcipuinfo` module: `gcipuinfo.gcipuinfo().getDevices()` answers a list of
{attribute: value} string dicts, by default wandb's recorded 3-IPU answer (tests/fixtures/ipu).

`with_devices(devices)` makes another module-like object answering `devices` (which may be anything, to
play a broken binding); `calls` counts getDevices() calls of that module."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

RECORDED: list[dict[str, str]] = json.loads(
    (
        Path(__file__).resolve().parents[1]
        / "fixtures"
        / "ipu"
        / "gcipuinfo-getDevices_3ipus_wandb-mock.json"
    ).read_text()
)


def with_devices(devices: Any) -> Any:
    """A module-like namespace whose gcipuinfo() instances answer `devices`."""
    state = SimpleNamespace(calls=0, update_mode=None)

    class Info:
        def setUpdateMode(self, on: bool) -> None:
            state.update_mode = on

        def getDevices(self) -> Any:
            state.calls += 1
            if isinstance(devices, BaseException):
                raise devices
            return json.loads(json.dumps(devices)) if isinstance(devices, list) else devices

    return SimpleNamespace(gcipuinfo=Info, state=state)


_default = with_devices(RECORDED)
gcipuinfo = _default.gcipuinfo
state = _default.state
