"""Google TPUs through libtpu's runtime-metrics gRPC service (localhost:8431), the service `tpu-info` reads.

libtpu serves `tpu.monitoring.runtime.RuntimeMetricService/GetRuntimeMetric` while a program that loaded it
(JAX, PyTorch/XLA) runs. Three metrics are read, each answering one value per device, the device named by an
attribute (`device-id`, an integer; ids need not be contiguous, wandb issue #9276):

- `tpu.runtime.hbm.memory.usage.bytes` and `tpu.runtime.hbm.memory.total.bytes` (bytes, per device);
- `tpu.runtime.tensorcore.dutycycle.percent` (per chip; on v2/v3 a chip has two devices, so when the
  service answers half as many duty cycles as HBM devices, each chip's value goes to both its devices, as
  tpu-info and wandb do).

TensorCore utilization is not in the gRPC service: tpu-info takes it from the libtpu SDK
(`libtpu.sdk.tpumonitoring.get_metric("tensorcore_util").data()`). sysgauge never imports libtpu itself
(importing it can grab or crash the TPU, which is why tpu-info imports it in a canary subprocess); it uses
the SDK only when given one, or when the monitored program has already imported `libtpu.sdk`.

Why there is no reading thread: the three calls go out together as futures with one short deadline
(`timeout`, 0.5 s), so a read costs at most that even when the service hangs; after a failed read the
service is left alone for a growing pause (1 s up to 10 s), so a hung service costs a tick rarely.

Why probe() says "available" without an answer: the service only exists while a TPU program runs, and
`sysgauge run -- python train.py` probes before the child loads libtpu. So a TPU chip on the PCI bus
(Google's vendor id 0x1ae0, as tpu-info detects chips) is enough; readings start when the service answers.
Messages are built from a descriptor in `_tpu_proto` (no tpu-info, no generated code: see there why).
"""

from __future__ import annotations

import glob
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources.base import Attributes, Reading, from_percent, share

_logger = logging.getLogger("sysgauge")

DEFAULT_ADDRESS = "localhost:8431"
HBM_USAGE = "tpu.runtime.hbm.memory.usage.bytes"
HBM_TOTAL = "tpu.runtime.hbm.memory.total.bytes"
DUTY_CYCLE = "tpu.runtime.tensorcore.dutycycle.percent"
METRIC_NAMES = (HBM_USAGE, HBM_TOTAL, DUTY_CYCLE)
SDK_TENSORCORE_UTIL = "tensorcore_util"

GOOGLE_PCI_VENDOR = "0x1ae0"
# PCI device id -> TPU generation, from tpu-info's device.py (v2 and v3 share 0x0027; the subsystem tells).
_PCI_CHIPS = {"0x005e": "v4", "0x0063": "v5e", "0x0062": "v5p", "0x006f": "v6e", "0x0076": "7x"}
_PCI_V2_V3 = {"0x004e": "v2", "0x004f": "v3"}
# Attribute keys that name the device, in the simple attribute or inside a key-value list.
_DEVICE_KEYS = ("device-id", "device_id", "device_ordinal", "device-ordinal", "chip-id", "chip_id")
_MAX_MESSAGE = 4 * 2**20
_MAX_PAUSE_S = 10.0
# Call outcomes that mean nobody is serving (yet): no connection, or no answer in time.
_ABSENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

Values = dict[int, float]


# --- accelerator type ---------------------------------------------------------------------------


def accelerator_from_pci(sys_root: str = "/sys") -> tuple[str | None, int]:
    """(generation, number of TPU PCI functions) from the PCI bus, as tpu-info finds chips."""
    kinds: list[str] = []
    for path in sorted(glob.glob(os.path.join(sys_root, "bus", "pci", "devices", "*"))):
        vendor = _read_text(os.path.join(path, "vendor"))
        if vendor != GOOGLE_PCI_VENDOR:
            continue
        device = _read_text(os.path.join(path, "device")) or ""
        kind = _PCI_CHIPS.get(device)
        if device == "0x0027":
            kind = _PCI_V2_V3.get(_read_text(os.path.join(path, "subsystem_device")) or "")
        if kind is not None:
            kinds.append(kind)
    return (kinds[0] if kinds else None), len(kinds)


def accelerator_from_env(environ: Mapping[str, str]) -> str | None:
    """The generation part of TPU_ACCELERATOR_TYPE (set on TPU VMs: 'v6e-8', 'v5litepod-4')."""
    value = environ.get("TPU_ACCELERATOR_TYPE", "").strip()
    if not value:
        return None
    generation = value.split("-", 1)[0].lower()
    return {"v5litepod": "v5e", "tpu7x": "7x"}.get(generation, generation)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


# --- decoding (pure) ----------------------------------------------------------------------------


def device_of(metric: Any) -> int | None:
    """The device id of one answered value, or None when the entry names no device we can read."""
    attribute = metric.attribute
    if attribute.value.WhichOneof("attr") == "kvlist_attr":
        for inner in attribute.value.kvlist_attr.attributes:
            if inner.key in _DEVICE_KEYS:
                return _id_of(inner.value)
        return None
    # libtpu names it `device-id`; an integer under another key is still the only id there is.
    return _id_of(attribute.value)


def _id_of(value: Any) -> int | None:
    kind = value.WhichOneof("attr")
    if kind == "int_attr":
        return int(value.int_attr)
    if kind == "string_attr" and value.string_attr.strip().isdigit():
        return int(value.string_attr)
    return None


def gauge_value(metric: Any) -> float | None:
    """The gauge's number, whichever numeric field libtpu set; None for strings, non-gauges, NaN."""
    if metric.WhichOneof("measure") != "gauge":
        return None
    kind = metric.gauge.WhichOneof("value")
    if kind == "as_double":
        value = float(metric.gauge.as_double)
    elif kind == "as_int":
        value = float(metric.gauge.as_int)
    else:
        return None
    return value if math.isfinite(value) else None


def values_of(response: Any) -> tuple[Values, list[str]]:
    """{device id: value} of one GetRuntimeMetric answer, and what was wrong with the entries left out."""
    out: Values = {}
    problems: list[str] = []
    for metric in response.metric.metrics:
        device = device_of(metric)
        value = gauge_value(metric)
        if device is None:
            problems.append("an entry names no device")
        elif value is None:
            problems.append(f"device {device} has no numeric gauge")
        elif value < 0:
            problems.append(f"device {device} has a negative value")
        else:
            out[device] = value
    return out, problems


def sdk_percentages(data: Iterable[Any]) -> list[float | None]:
    """The SDK's per-core strings ('13.60', '13.60%') as percentages, None where one is not a number."""
    out: list[float | None] = []
    for item in data:
        try:
            value = float(str(item).strip().rstrip("%"))
        except ValueError:
            out.append(None)
            continue
        out.append(value if math.isfinite(value) else None)
    return out


def shape(
    usage: Values,
    total: Values,
    duty: Values,
    accelerator: str,
    tensorcore: Mapping[int, float] | None = None,
) -> list[Reading]:
    """Readings from the decoded values (percentages in, fractions out). Pure."""
    devices = sorted(set(usage) | set(total) | set(duty) | set(tensorcore or {}))
    attrs: dict[int, Attributes] = {d: ((m.TPU_DEVICE, d), (m.TPU_ACCELERATOR, accelerator)) for d in devices}
    memory_devices = sorted(set(usage) | set(total))
    per_chip = len(memory_devices) == 2 * len(duty) and not set(duty) >= set(memory_devices)
    if duty and per_chip:
        # v2/v3: duty cycle per chip, memory per device (two per chip): chip i -> its devices 2i, 2i+1.
        chips = sorted(duty)
        duty = {device: duty[chips[i // 2]] for i, device in enumerate(memory_devices)}
        for device in duty:
            attrs.setdefault(device, ((m.TPU_DEVICE, device), (m.TPU_ACCELERATOR, accelerator)))
    out: list[Reading] = []
    for device in sorted(attrs):
        ident = attrs[device]
        used, limit = usage.get(device), total.get(device)
        if used is not None:
            out.append(Reading(m.TPU_HBM_USAGE, used, ident))
        if limit:
            out.append(Reading(m.TPU_HBM_LIMIT, limit, ident))
            fraction = None if used is None else share(used, limit)
            if fraction is not None:
                out.append(Reading(m.TPU_HBM_UTILIZATION, fraction, ident))
        busy = from_percent(duty[device]) if device in duty else None
        if busy is not None:
            out.append(Reading(m.TPU_DUTY_CYCLE, busy, ident))
        core = from_percent(tensorcore[device]) if tensorcore is not None and device in tensorcore else None
        if core is not None:
            out.append(Reading(m.TPU_TENSORCORE_UTILIZATION, core, ident))
    return out


# --- the source ---------------------------------------------------------------------------------


class TpuSource:
    name = "tpu"

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        timeout: float = 0.5,
        accelerator_type: str | None = None,
        sdk: Any | None = None,
        sys_root: str = "/sys",
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self._timeout = timeout
        self._accelerator = accelerator_type
        self._sdk = sdk
        self._sys_root = sys_root
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self._channel: Any = None
        self._call: Any = None
        self._log = LogOnce(_logger)
        self._retry_at = 0.0
        self._pause = 0.0
        self.notes: list[str] = []

    # --- probing ---------------------------------------------------------------------------------

    def probe(self) -> str | None:
        chip, functions = accelerator_from_pci(self._sys_root)
        if not functions and not accelerator_from_env(self._environ) and self.address == DEFAULT_ADDRESS:
            # Most machines have no TPU: say so without loading grpc and protobuf (about 20 MiB resident).
            return "no TPU on the PCI bus (and no TPU_* variable, no tpu_address configured)"
        try:
            self._connect()
        except ImportError as exc:
            return f"grpcio or protobuf is not importable: {exc}"
        if self._accelerator is None:
            self._accelerator = chip or accelerator_from_env(self._environ) or "unknown"
        from sysgauge.sources import _tpu_proto as pb

        try:
            answer = _decode(self._call(pb.MetricRequest(metric_name=HBM_TOTAL), timeout=self._timeout))
        except Exception as exc:
            why = _why(exc, self._timeout)
            if _status(exc) == "UNIMPLEMENTED":
                self.close()
                return f"the gRPC server at {self.address} is not a TPU runtime metrics service ({why})"
            if _status(exc) not in _ABSENT:
                # Something that speaks the service answered, if badly: reads will say what is wrong.
                self.notes.append(f"runtime metrics service at {self.address} answered with an error: {why}")
                return None
            if functions:
                self.notes.append(
                    f"{functions} TPU device(s) on the PCI bus; the runtime metrics service at "
                    f"{self.address} does not answer yet ({why}): readings start when a program loads libtpu"
                )
                return None
            self.close()
            return f"no TPU runtime metrics service at {self.address} ({why})"
        devices, _ = values_of(answer)
        self.notes.append(
            f"runtime metrics service at {self.address}: {len(devices)} {self._accelerator} device(s)"
        )
        return None

    def _connect(self) -> None:
        if self._call is not None:
            return
        grpc: Any = importlib.import_module("grpc")  # no type stubs: used as Any
        from sysgauge.sources import _tpu_proto as pb

        self._channel = grpc.insecure_channel(
            self.address,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                # The service is local: an https_proxy meant for the internet must not carry these calls.
                ("grpc.enable_http_proxy", 0),
                ("grpc.enable_retries", 0),
            ],
        )
        self._call = self._channel.unary_unary(
            pb.GET_RUNTIME_METRIC,
            request_serializer=pb.MetricRequest.SerializeToString,
            # Raw bytes, decoded by `_decode`: grpc's own decoding logs a traceback for every bad answer.
            response_deserializer=None,
        )

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("tpu")

    def describe(self) -> str:
        return "\n".join(self.notes)

    # --- reading ---------------------------------------------------------------------------------

    def read(self) -> list[Reading]:
        now = self._clock()
        if self._call is None or now < self._retry_at:
            return []
        from sysgauge.sources import _tpu_proto as pb

        futures = {
            name: self._call.future(pb.MetricRequest(metric_name=name), timeout=self._timeout)
            for name in METRIC_NAMES
        }
        answers: dict[str, Values] = {}
        failures: list[str] = []
        for name, future in futures.items():
            try:
                response = _decode(future.result())
            except Exception as exc:
                failures.append(f"{name}: {_why(exc, self._timeout)}")
                continue
            values, problems = values_of(response)
            for problem in problems:
                self._log.warning(f"tpu:{name}:{problem}", "sysgauge: TPU metric %s: %s", name, problem)
            answers[name] = values
        if not answers:
            self._back_off(now)
            self._log.warning(
                f"tpu:down:{'; '.join(sorted(failures))}",
                "sysgauge: TPU runtime metrics service at %s gave nothing (%s); retrying",
                self.address,
                "; ".join(failures),
            )
            return []
        for failure in failures:
            self._log.warning(f"tpu:{failure}", "sysgauge: TPU metric skipped: %s", failure)
        self._pause = 0.0
        usage, total, duty = (answers.get(name, {}) for name in METRIC_NAMES)
        tensorcore = self._tensorcore(sorted(set(usage) | set(total)))
        return shape(usage, total, duty, self._accelerator or "unknown", tensorcore)

    def _back_off(self, now: float) -> None:
        self._pause = min(max(self._pause * 2, 1.0), _MAX_PAUSE_S)
        self._retry_at = now + self._pause

    def _tensorcore(self, devices: list[int]) -> dict[int, float] | None:
        sdk = self._sdk if self._sdk is not None else sys.modules.get("libtpu.sdk")
        if sdk is None:
            return None
        try:
            monitoring = getattr(sdk, "tpumonitoring", None) or sdk.monitoring
            percentages = sdk_percentages(monitoring.get_metric(SDK_TENSORCORE_UTIL).data())
        except Exception as exc:
            self._log.warning(
                f"tpu:sdk:{type(exc).__name__}",
                "sysgauge: libtpu SDK gave no TensorCore utilization: %r",
                exc,
            )
            return None
        # The SDK lists cores in order; the service names devices by id: the i-th core is the i-th device.
        ids = devices if len(devices) == len(percentages) else list(range(len(percentages)))
        return {device: value for device, value in zip(ids, percentages, strict=True) if value is not None}

    def close(self) -> None:
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            channel.close()


def _decode(answer: bytes) -> Any:
    from sysgauge.sources import _tpu_proto as pb

    try:
        return pb.MetricResponse.FromString(answer)
    except pb.DecodeError:
        raise ValueError(f"the answer ({len(answer)} bytes) is not a MetricResponse") from None


def _status(exc: Exception) -> str | None:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        status = code()
    except Exception:
        return None
    return str(getattr(status, "name", status))


def _why(exc: Exception, timeout: float) -> str:
    """One line for a failed call: the gRPC status and its details, or the exception."""
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            status = code()
            details = getattr(exc, "details", lambda: "")()
        except Exception:
            return f"{type(exc).__name__}: {exc}"
        name = getattr(status, "name", str(status))
        if name == "DEADLINE_EXCEEDED":
            return f"no answer within {timeout:g} s"
        first = str(details or "").strip().splitlines()[:1]
        return name + (f": {first[0][:200]}" if first else "")
    return f"{type(exc).__name__}: {exc}"
