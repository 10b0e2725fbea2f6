"""The one way sysgauge calls NVML (through nvidia-ml-py, imported on first use).

`Nvml.call` turns the driver's answers into three outcomes: a value; None for "not here" (the function is
missing from an older driver, or not supported on that device - then it is never called again for it);
or `DeviceLost` when the GPU itself failed. Each distinct problem is logged once.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from sysgauge._logonce import LogOnce

_logger = logging.getLogger("sysgauge")

# NVML return codes (nvml.h); the names are pynvml's.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
TIMEOUT = 10
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
RESET_REQUIRED = 16
GPU_NOT_FOUND = 28
UNKNOWN = 999
_DEVICE_FAILURES = {GPU_IS_LOST, RESET_REQUIRED, GPU_NOT_FOUND, UNKNOWN}

# nvmlInit is process-wide and reference counted by the driver; sysgauge initializes once per process
# however many handles (providers) use the GPU source, and shuts down after the last.
_init_lock = threading.Lock()
_init_users = 0


class NvmlUnavailable(Exception):
    """NVML cannot be used here; the message says why, for `sysgauge detect`."""


class DeviceLost(Exception):
    """The GPU stopped answering (GpuIsLost, Unknown, ...)."""


_REASONS = {
    "NVMLError_LibraryNotFound": "NVML library libnvidia-ml.so.1 not found (no NVIDIA driver installed)",
    "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded",
    "NVMLError_LibRmVersionMismatch": "NVIDIA driver/library version mismatch "
    "(the driver was updated without a reboot or module reload)",
    "NVMLError_NoPermission": "no permission to use the NVIDIA driver",
    "NVMLError_InsufficientPower": "a GPU is not powered properly",
}


def _check_library() -> None:
    """On Linux, fail fast (and without importing nvidia-ml-py, ~2.5 MiB) where no driver library exists."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        raise NvmlUnavailable(_REASONS["NVMLError_LibraryNotFound"]) from None


class Nvml:
    def __init__(self, module: Any | None = None) -> None:
        self._module = module
        self._missing: set[str] = set()
        self._unsupported: set[tuple[str, str]] = set()
        self._log = LogOnce(_logger)
        self._initialized = False
        self.calls = 0  # NVML calls made, for benchmarks
        # Seconds per call by C symbol, when a caller (scripts/gpu-check) asks for them.
        self.timings: dict[str, list[float]] | None = None

    @property
    def module(self) -> Any:
        if self._module is None:
            _check_library()
            try:
                import pynvml
            except ImportError as exc:
                raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc})") from None
            self._module = pynvml
        return self._module

    def init(self) -> None:
        global _init_users
        if self._initialized:
            return
        module = self.module
        with _init_lock:
            if _init_users == 0:
                try:
                    module.nvmlInit()
                except module.NVMLError as exc:
                    name = type(exc).__name__
                    raise NvmlUnavailable(_REASONS.get(name, f"NVML initialization failed: {exc}")) from None
                except OSError as exc:  # a broken library file
                    raise NvmlUnavailable(f"NVML library cannot be loaded: {exc}") from None
            _init_users += 1
        self._initialized = True

    def shutdown(self) -> None:
        global _init_users
        if not self._initialized:
            return
        self._initialized = False
        with _init_lock:
            _init_users -= 1
            if _init_users == 0:
                try:
                    self.module.nvmlShutdown()
                except self.module.NVMLError:
                    pass

    def missing(self, function: str) -> bool:
        """True once the driver showed it lacks `function` (an older driver)."""
        return function in self._missing

    def supported(self, symbol: str, device: str = "") -> bool:
        """False once the driver showed `symbol` is missing, or not supported on `device`."""
        return symbol not in self._missing and (symbol, device) not in self._unsupported

    def call(self, function: str, *args: Any, device: str = "", symbol: str = "", **kwargs: Any) -> Any:
        """pynvml.<function>(*args, **kwargs), or None when it is not available.

        `device` keys the "not supported" memory; `symbol` names the C symbol when it is not `function`
        (pynvml.nvmlDeviceGetMemoryInfo(version=v2) calls nvmlDeviceGetMemoryInfo_v2).
        """
        key = symbol or function
        if key in self._missing or (key, device) in self._unsupported:
            return None
        module = self.module
        self.calls += 1
        started = time.perf_counter() if self.timings is not None else 0.0
        try:
            result = getattr(module, function)(*args, **kwargs)
            if self.timings is not None:
                self.timings.setdefault(key, []).append(time.perf_counter() - started)
            return result
        except module.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == FUNCTION_NOT_FOUND:
                self._missing.add(key)
                self._log.info(
                    f"missing:{key}", "sysgauge: NVML driver has no %s (older driver); using what it has", key
                )
                return None
            if code in (NOT_SUPPORTED, NO_PERMISSION):
                self._unsupported.add((key, device))
                if code == NO_PERMISSION:
                    self._log.warning(f"perm:{key}", "sysgauge: NVML %s: no permission; skipped", key)
                return None
            if code in (NOT_FOUND, TIMEOUT, 0):
                # NOT_FOUND: nothing to report now (no process samples since the last call).
                # TIMEOUT: no event arrived while waiting for one.
                # 0: pynvml raises NVMLError(Success) when a size probe finds nothing.
                return None
            if code in _DEVICE_FAILURES:
                raise DeviceLost(f"{key}: {exc}") from None
            self._log.warning(f"error:{key}:{code}", "sysgauge: NVML %s failed: %s", key, exc)
            return None
        except UnicodeDecodeError:
            # A name or UUID the driver cut inside a multi-byte character: that string is unreadable.
            self._log.warning(f"decode:{key}", "sysgauge: NVML %s returned undecodable text; skipped", key)
            return None
        except Exception as exc:  # NVMLLibraryMismatchError and other binding-side surprises
            if "Mismatch" in type(exc).__name__:
                self._missing.add(key)
                return None
            raise
