from __future__ import annotations

from sysgauge import metrics as m
from sysgauge.options import Options
from sysgauge.sources.network import NetworkSource
from tests.fakes import FakePsutil
from tests.fakes import by_spec as by


def test_default_leaves_out_loopback_and_maps_directions() -> None:
    defaults = Options()
    readings = NetworkSource(FakePsutil(), defaults.network_include, defaults.network_exclude).read()
    io = by(readings, m.SYSTEM_NETWORK_IO)
    assert io == {
        (("network.interface.name", "eth0"), ("network.io.direction", "transmit")): 1000.0,
        (("network.interface.name", "eth0"), ("network.io.direction", "receive")): 2000.0,
    }
    assert (
        by(readings, m.SYSTEM_NETWORK_ERRORS)[
            (("network.interface.name", "eth0"), ("network.io.direction", "transmit"))
        ]
        == 1.0
    )
    assert (
        by(readings, m.SYSTEM_NETWORK_PACKET_DROPPED)[
            (("network.interface.name", "eth0"), ("network.io.direction", "receive"))
        ]
        == 2.0
    )


def test_loopback_can_be_enabled() -> None:
    readings = NetworkSource(FakePsutil(), include=["lo"], exclude=[]).read()
    assert {dict(a)["network.interface.name"] for a in by(readings, m.SYSTEM_NETWORK_IO)} == {"lo"}
