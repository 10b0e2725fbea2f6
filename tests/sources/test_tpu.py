"""The TPU source against a real gRPC server on a loopback port, speaking libtpu's RuntimeMetricService.

The server encodes its answers by hand in protobuf's wire format from the field numbers of the published
tpu_metric_service.proto (tpu-info 0.14.2), so the source's own message declarations are checked against the
published schema, not against themselves; it can also answer bytes that are no protobuf at all.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sysgauge import metrics as m
from sysgauge.sources.base import Reading
from sysgauge.sources.tpu import (
    DUTY_CYCLE,
    HBM_TOTAL,
    HBM_USAGE,
    TpuSource,
    accelerator_from_env,
    accelerator_from_pci,
    shape,
)

grpc: Any = importlib.import_module("grpc")  # no type stubs: used as Any
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tpu"
RECORDED = json.loads((FIXTURES / "v6e_4chips_runtime_metrics.json").read_text())
TABLE = (FIXTURES / "tpu-info_v6e_4chips_static_v0.14.txt").read_text()
SERVICE = "tpu.monitoring.runtime.RuntimeMetricService"
GiB = 2**30

# --- protobuf wire format, by hand --------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | int | float) -> bytes:
    if isinstance(payload, bytes):
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload
    if isinstance(payload, float):
        return _varint(number << 3 | 1) + struct.pack("<d", payload)
    return _varint(number << 3 | 0) + _varint(payload)


def metric_entry(device: Any, value: Any, key: str = "device-id") -> bytes:
    """One `Metric`: attribute {key, value {int_attr | string_attr}} and gauge {as_int | as_double}."""
    attr_value = _field(3, device) if isinstance(device, int) else _field(1, str(device).encode())
    attribute = _field(1, key.encode()) + _field(2, attr_value)
    if isinstance(value, float):
        gauge = _field(1, value)
    elif isinstance(value, int):
        gauge = _field(2, value)
    else:
        gauge = _field(3, str(value).encode())  # as_string
    return _field(1, attribute) + _field(3, gauge)


def response(name: str, entries: list[bytes]) -> bytes:
    tpu_metric = _field(1, name.encode()) + b"".join(_field(3, e) for e in entries)
    return _field(1, tpu_metric)


def requested_name(request: bytes) -> str:
    """Field 1 (metric_name) of a MetricRequest."""
    assert request[0] == 0x0A, request
    length, shift, i = 0, 0, 1
    while True:
        byte = request[i]
        length |= (byte & 0x7F) << shift
        shift, i = shift + 7, i + 1
        if not byte & 0x80:
            break
    return request[i : i + length].decode()


# --- the server ---------------------------------------------------------------------------------

Answer = Callable[[str, Any], bytes]


def recorded_answer(ids: Mapping[int, int] | None = None) -> Answer:
    """Serve the fixture's values; `ids` renames device ids (non-contiguous ids)."""

    def answer(name: str, context: Any) -> bytes:
        values = RECORDED["metrics"].get(name)
        if values is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"metric {name} not found")
        entries = [
            metric_entry((ids or {}).get(int(device), int(device)), value) for device, value in values.items()
        ]
        return response(name, entries)

    return answer


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[str] = []
        self.release = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(self._handle)  # raw bytes in and out
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"GetRuntimeMetric": handler}),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    def _handle(self, request: bytes, context: Any) -> bytes:
        name = requested_name(request)
        self.requests.append(name)
        return self.answer(name, context)

    def stop(self) -> None:
        self.release.set()
        self._server.stop(None)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Server]]:
    servers: list[Server] = []

    def start(answer: Answer) -> Server:
        server = Server(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def source_for(server: Server | str, tmp_path: Path, **kwargs: Any) -> TpuSource:
    address = server if isinstance(server, str) else server.address
    kwargs.setdefault("accelerator_type", None)
    return TpuSource(
        address, timeout=kwargs.pop("timeout", 2.0), sys_root=str(tmp_path), environ={}, **kwargs
    )


def fake_sdk(values: list[str]) -> Any:
    metric = SimpleNamespace(data=lambda: list(values))
    return SimpleNamespace(tpumonitoring=SimpleNamespace(get_metric=lambda name: metric))


def by_metric(readings: list[Reading]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for reading in readings:
        attrs = dict(reading.attributes)
        assert set(attrs) == {m.TPU_DEVICE, m.TPU_ACCELERATOR}
        device = attrs[m.TPU_DEVICE]
        assert isinstance(device, int)
        assert device not in out.setdefault(reading.spec.name, {}), "one reading per metric and device"
        out[reading.spec.name][device] = reading.value
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_tpu_sysfs(root: Path, count: int, device: str = "0x006f") -> None:
    for i in range(count):
        function = root / "bus" / "pci" / "devices" / f"0000:00:0{i + 4}.0"
        function.mkdir(parents=True)
        (function / "vendor").write_text("0x1ae0\n")
        (function / "device").write_text(device + "\n")
    other = root / "bus" / "pci" / "devices" / "0000:00:01.0"
    other.mkdir(parents=True)
    (other / "vendor").write_text("0x8086\n")
    (other / "device").write_text("0x1237\n")


# --- the recorded v6e host ----------------------------------------------------------------------


def table_rows(title: str) -> list[list[str]]:
    section = TABLE.split(title + "\n", 1)[1].split("\n\n", 2)[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()]
    return [row for row in rows[2:] if row and row[0]]


def test_recorded_v6e_host_every_reading(serve: Callable[[Answer], Server], tmp_path: Path) -> None:
    server = serve(recorded_answer())
    source = source_for(
        server, tmp_path, accelerator_type="v6e", sdk=fake_sdk(RECORDED["sdk"]["tensorcore_util"])
    )
    assert source.probe() is None
    readings = source.read()
    source.close()

    got = by_metric(readings)
    assert set(got) == {
        m.TPU_HBM_USAGE.name,
        m.TPU_HBM_LIMIT.name,
        m.TPU_HBM_UTILIZATION.name,
        m.TPU_DUTY_CYCLE.name,
        m.TPU_TENSORCORE_UTILIZATION.name,
    }
    assert all(dict(r.attributes)[m.TPU_ACCELERATOR] == "v6e" for r in readings)
    assert len(readings) == 4 * 5
    # Exactly the served values ...
    assert got[m.TPU_HBM_USAGE.name] == {0: 19810536653, 1: 11166914970, 2: 11166914970, 3: 11166914970}
    assert got[m.TPU_HBM_LIMIT.name] == dict.fromkeys(range(4), 33554432000)
    assert got[m.TPU_HBM_UTILIZATION.name][0] == pytest.approx(19810536653 / 33554432000)
    assert got[m.TPU_DUTY_CYCLE.name] == dict.fromkeys(range(4), 1.0)
    assert got[m.TPU_TENSORCORE_UTILIZATION.name] == pytest.approx({0: 0.136, 1: 0.1481, 2: 0.1436, 3: 0.136})
    # ... which are what the recorded tpu-info printed.
    for chip, hbm, duty in table_rows("TPU Runtime Utilization"):
        used, total = re.findall(r"([\d.]+) GiB", hbm)
        assert got[m.TPU_HBM_USAGE.name][int(chip)] / GiB == pytest.approx(float(used), abs=0.005)
        assert got[m.TPU_HBM_LIMIT.name][int(chip)] / GiB == pytest.approx(float(total), abs=0.005)
        assert got[m.TPU_DUTY_CYCLE.name][int(chip)] * 100 == pytest.approx(float(duty.rstrip("%")))
    for core, utilization in table_rows("TensorCore Utilization"):
        assert got[m.TPU_TENSORCORE_UTILIZATION.name][int(core)] * 100 == pytest.approx(
            float(utilization.rstrip("%"))
        )
    # Every value is within its declared unit's range.
    for reading in readings:
        if reading.spec.unit == "1":
            assert 0.0 <= reading.value <= 1.0


def test_non_contiguous_device_ids(serve: Callable[[Answer], Server], tmp_path: Path) -> None:
    server = serve(recorded_answer(ids={0: 0, 1: 2, 2: 5, 3: 7}))
    source = source_for(
        server, tmp_path, accelerator_type="v6e", sdk=fake_sdk(RECORDED["sdk"]["tensorcore_util"])
    )
    assert source.probe() is None
    got = by_metric(source.read())
    source.close()
    for name in (m.TPU_HBM_USAGE.name, m.TPU_HBM_LIMIT.name, m.TPU_DUTY_CYCLE.name):
        assert set(got[name]) == {0, 2, 5, 7}
    assert got[m.TPU_HBM_USAGE.name][2] == 11166914970
    # The SDK lists cores in order: the i-th core is the i-th device id.
    assert got[m.TPU_TENSORCORE_UTILIZATION.name] == pytest.approx({0: 0.136, 2: 0.1481, 5: 0.1436, 7: 0.136})


def test_no_tensorcore_utilization_without_the_sdk(serve: Callable[[Answer], Server], tmp_path: Path) -> None:
    source = source_for(serve(recorded_answer()), tmp_path, accelerator_type="v6e")
    assert source.probe() is None
    got = by_metric(source.read())
    source.close()
    assert m.TPU_TENSORCORE_UTILIZATION.name not in got
    assert len(got[m.TPU_DUTY_CYCLE.name]) == 4


def test_accelerator_type_from_the_pci_bus(serve: Callable[[Answer], Server], tmp_path: Path) -> None:
    fake_tpu_sysfs(tmp_path, 4)
    assert accelerator_from_pci(str(tmp_path)) == ("v6e", 4)
    source = source_for(serve(recorded_answer()), tmp_path)
    assert source.probe() is None
    assert "4 v6e device(s)" in source.describe()
    assert {dict(r.attributes)[m.TPU_ACCELERATOR] for r in source.read()} == {"v6e"}
    source.close()


def test_accelerator_type_from_the_environment() -> None:
    assert accelerator_from_env({"TPU_ACCELERATOR_TYPE": "v5litepod-4"}) == "v5e"
    assert accelerator_from_env({"TPU_ACCELERATOR_TYPE": "v6e-8"}) == "v6e"
    assert accelerator_from_env({}) is None


def test_v2_duty_cycle_per_chip_goes_to_both_devices() -> None:
    usage = {d: float(d) for d in range(8)}
    total = dict.fromkeys(range(8), 8.0 * GiB)
    readings = shape(usage, total, {0: 10.0, 1: 20.0, 2: 30.0, 3: 40.0}, "v2")
    duty = by_metric(readings)[m.TPU_DUTY_CYCLE.name]
    assert duty == pytest.approx({0: 0.1, 1: 0.1, 2: 0.2, 3: 0.2, 4: 0.3, 5: 0.3, 6: 0.4, 7: 0.4})


# --- failures -----------------------------------------------------------------------------------


def test_service_down_probe_says_why(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    source = source_for(address, tmp_path, timeout=1.0)
    started = time.monotonic()
    reason = source.probe()
    assert time.monotonic() - started < 3.0
    assert reason is not None
    assert reason.startswith(f"no TPU runtime metrics service at {address} (")
    assert "UNAVAILABLE" in reason
    assert source.read() == []
    source.close()


def test_service_not_up_yet_on_a_tpu_host(
    serve: Callable[[Answer], Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`sysgauge run` probes before the child loads libtpu: TPU chips on the bus make the source available."""
    fake_tpu_sysfs(tmp_path, 2, device="0x0063")
    port = free_port()
    now = [0.0]
    source = TpuSource(
        f"127.0.0.1:{port}", timeout=1.0, sys_root=str(tmp_path), environ={}, clock=lambda: now[0]
    )
    assert source.probe() is None
    assert "does not answer yet" in source.describe()
    caplog.set_level(logging.WARNING, logger="sysgauge")
    assert source.read() == []
    now[0] += 0.5
    assert source.read() == []  # pausing: the service is not asked
    server = Server(recorded_answer())
    try:
        source.address = server.address  # the program started: a service answers (here on another port)
        source.close()
        source.probe()
        now[0] += 20
        readings = source.read()
    finally:
        server.stop()
        source.close()
    assert by_metric(readings)[m.TPU_HBM_LIMIT.name] == dict.fromkeys(range(4), 33554432000)
    assert {dict(r.attributes)[m.TPU_ACCELERATOR] for r in readings} == {"v5e"}


def test_hung_service_read_returns_within_the_deadline(
    serve: Callable[[Answer], Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    answers: dict[str, Answer] = {}
    server = serve(lambda name, context: answers["now"](name, context))
    answers["now"] = recorded_answer()
    now = [0.0]
    source = source_for(server, tmp_path, timeout=0.3, accelerator_type="v6e", clock=lambda: now[0])
    assert source.probe() is None

    def hang(name: str, context: Any) -> bytes:
        server.release.wait(10)
        return b""

    answers["now"] = hang
    caplog.set_level(logging.WARNING, logger="sysgauge")
    for _ in range(3):
        now[0] += 60  # past any pause
        started = time.monotonic()
        assert source.read() == []
        assert time.monotonic() - started < 1.0
    said = [r.getMessage() for r in caplog.records if "gave nothing" in r.getMessage()]
    assert len(said) == 1, said
    assert "no answer within 0.3 s" in said[0]
    # A pause follows a failure: the next tick does not wait for the hung service again.
    asked = len(server.requests)
    started = time.monotonic()
    assert source.read() == []
    assert time.monotonic() - started < 0.05
    assert len(server.requests) == asked
    server.release.set()
    source.close()


def test_garbage_bytes_no_exception_reason_logged_once(
    serve: Callable[[Answer], Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(lambda name, context: b"\xff\xff\xff\xff garbage, not protobuf")
    now = [0.0]
    source = source_for(server, tmp_path, accelerator_type="v6e", clock=lambda: now[0])
    assert source.probe() is None  # it answered: a service is there
    caplog.set_level(logging.WARNING, logger="sysgauge")
    for _ in range(3):
        now[0] += 60
        assert source.read() == []
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert "is not a MetricResponse" in said[0]
    source.close()


def test_missing_and_malformed_metrics(
    serve: Callable[[Answer], Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Duty cycle unknown to this libtpu; entries without a device, with a string gauge, negative."""

    def answer(name: str, context: Any) -> bytes:
        if name == DUTY_CYCLE:
            context.abort(grpc.StatusCode.NOT_FOUND, "metric not found")
        if name == HBM_USAGE:
            return response(
                name,
                [
                    metric_entry(0, 5 * GiB),
                    metric_entry("not-a-number", 6 * GiB, key="host"),
                    metric_entry(1, "lots"),
                    metric_entry(3, -1),
                    metric_entry("2", 7 * GiB),  # a string id that is a number is still an id
                ],
            )
        return response(name, [metric_entry(d, 16 * GiB) for d in range(4)])

    source = source_for(serve(answer), tmp_path, accelerator_type="v5e")
    assert source.probe() is None
    caplog.set_level(logging.WARNING, logger="sysgauge")
    for _ in range(3):
        got = by_metric(source.read())
        assert got[m.TPU_HBM_USAGE.name] == {0: 5 * GiB, 2: 7 * GiB}
        assert got[m.TPU_HBM_LIMIT.name] == dict.fromkeys(range(4), 16 * GiB)
        assert got[m.TPU_HBM_UTILIZATION.name] == {0: 5 / 16, 2: 7 / 16}
        assert m.TPU_DUTY_CYCLE.name not in got
    said = sorted(r.getMessage() for r in caplog.records)
    assert len(said) == 4, said  # each distinct problem once
    assert any("NOT_FOUND" in s and DUTY_CYCLE in s for s in said)
    assert any("names no device" in s for s in said)
    assert any("no numeric gauge" in s for s in said)
    assert any("negative" in s for s in said)
    source.close()


def test_bad_sdk_is_said_once(
    serve: Callable[[Answer], Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str) -> Any:
        raise RuntimeError("vbar control agent missing")

    sdk = SimpleNamespace(tpumonitoring=SimpleNamespace(get_metric=broken))
    source = source_for(serve(recorded_answer()), tmp_path, accelerator_type="v6e", sdk=sdk)
    assert source.probe() is None
    caplog.set_level(logging.WARNING, logger="sysgauge")
    for _ in range(2):
        got = by_metric(source.read())
        assert m.TPU_TENSORCORE_UTILIZATION.name not in got
        assert len(got[m.TPU_HBM_USAGE.name]) == 4
    assert len(caplog.records) == 1
    source.close()


def test_specs_are_the_declared_tpu_metrics() -> None:
    assert set(TpuSource().specs()) == {
        m.TPU_DUTY_CYCLE,
        m.TPU_HBM_USAGE,
        m.TPU_HBM_LIMIT,
        m.TPU_HBM_UTILIZATION,
        m.TPU_TENSORCORE_UTILIZATION,
    }
    assert HBM_TOTAL.startswith("tpu.runtime.hbm")
