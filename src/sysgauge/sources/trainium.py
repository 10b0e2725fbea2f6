"""AWS Trainium / Inferentia NeuronCores through `neuron-monitor`, run as one long-lived child.

neuron-monitor has no one-shot mode: it samples on its own period and streams one JSON report per line.
So sysgauge writes it a config (private temp dir, 0600), starts it once, and a supervisor thread reads its
stdout and keeps the latest report; the sampler's `read()` only shapes that report (`to_readings`, pure)
and never waits on the tool. A child that dies is restarted with exponential backoff; `close()`
terminates it (then kills it), reaps it and removes the config. Report layout: research/wandb.md §3.10
and shared/vendor-samples (a real trn1.2xlarge stream).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import psutil

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources._tools import Tool
from sysgauge.sources.base import Reading, finite_number, from_percent
from sysgauge.sources.process import ChildrenOf, default_children_of, walk_tree

_logger = logging.getLogger("sysgauge")

TOOL = "neuron-monitor"
DEFAULT_MAX_LINE_BYTES = 4 * 2**20  # one report of a 16-device trn2 with many models is far below this
_CHUNK = 65536
_STDERR_KEPT = 4096
_HEALTHY_RUN_S = 30.0  # a child that lived this long was not crash-looping: its successor starts quickly


# --- the config (pure) ---------------------------------------------------------------------------


def period_text(period: float) -> str:
    """neuron-monitor's period as its docs write it ("1s"): whole seconds, at least 1, because the
    documented format shows only seconds and a sub-second period would only burn the host's CPU."""
    return f"{max(1, round(period))}s"


def monitor_config(period: float) -> dict[str, Any]:
    """The config sysgauge hands neuron-monitor: only the groups it reports (plus the hardware ECC
    counters, cheap and kept for later), for every runtime; which runtimes count is decided here, by pid."""
    return {
        "period": period_text(period),
        "neuron_runtimes": [
            {
                "tag_filter": ".*",
                "metrics": [{"type": "neuroncore_counters"}, {"type": "memory_used"}],
            }
        ],
        "system_metrics": [{"type": "neuron_hw_counters"}],
    }


# --- shaping (pure) ------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    number = finite_number(value)
    return number if number is not None and number >= 0 else None


def _core(key: object) -> int | str:
    """Core keys are global NeuronCore indices as strings ("0"); an int attribute sorts and filters well."""
    text = str(key)
    return int(text) if text.isdigit() else text


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def runtimes_of(report: Mapping[str, Any], pids: Collection[int] | None) -> list[Mapping[str, Any]]:
    """The `report` sections of the runtime entries whose pid is in `pids` (every entry when None)."""
    entries = report.get("neuron_runtime_data")
    if not isinstance(entries, list):
        return []
    chosen = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        pid = entry.get("pid")
        if pids is not None and (not isinstance(pid, int) or pid not in pids):
            continue
        chosen.append(_mapping(entry.get("report")))
    return chosen


def to_readings(report: Mapping[str, Any], pids: Collection[int] | None) -> list[Reading]:
    """One neuron-monitor report -> readings, for the runtimes of `pids` (None: every runtime).

    - utilization per NeuronCore, percent -> fraction (Trn2's `v3d` halves and `flops` are not reported);
    - host memory by category (`usage_breakdown.host`), device memory per core by category
      (`usage_breakdown.neuroncore_memory_usage`), in bytes; the totals beside them are these sums, so
      they are not emitted again (a sum over the category would count them twice).
    Several matching runtimes (torchrun workers) add up their memory; a core is owned by one runtime, so a
    core seen twice keeps its highest utilization. Missing or malformed parts drop only themselves.
    """
    utilization: dict[int | str, float] = {}
    host: dict[str, float] = {}
    device: dict[tuple[int | str, str], float] = {}
    for runtime in runtimes_of(report, pids):
        counters = _mapping(_mapping(runtime.get("neuroncore_counters")).get("neuroncores_in_use"))
        for core_key, core in counters.items():
            percent = _number(_mapping(core).get("neuroncore_utilization"))
            fraction = None if percent is None else from_percent(percent)
            if fraction is not None:
                core_id = _core(core_key)
                utilization[core_id] = max(utilization.get(core_id, 0.0), fraction)
        used = _mapping(_mapping(runtime.get("memory_used")).get("neuron_runtime_used_bytes"))
        breakdown = _mapping(used.get("usage_breakdown"))
        for category, raw in _mapping(breakdown.get("host")).items():
            number = _number(raw)
            if number is not None:
                host[str(category)] = host.get(str(category), 0.0) + number
        for core_key, categories in _mapping(breakdown.get("neuroncore_memory_usage")).items():
            core_id = _core(core_key)
            for category, raw in _mapping(categories).items():
                number = _number(raw)
                if number is not None:
                    key = (core_id, str(category))
                    device[key] = device.get(key, 0.0) + number
    readings = [
        Reading(m.NEURON_CORE_UTILIZATION, value, ((m.NEURON_CORE, core),))
        for core, value in utilization.items()
    ]
    readings += [
        Reading(m.NEURON_HOST_MEMORY_USAGE, value, ((m.NEURON_MEMORY_CATEGORY, category),))
        for category, value in host.items()
    ]
    readings += [
        Reading(m.NEURON_DEVICE_MEMORY_USAGE, value, ((m.NEURON_CORE, core), (m.NEURON_MEMORY_CATEGORY, cat)))
        for (core, cat), value in device.items()
    ]
    return readings


# --- the line splitter ---------------------------------------------------------------------------


class LineSplitter:
    """Bytes in, complete lines out, none longer than `max_bytes`: a longer line is dropped as it streams
    (never held whole), so a runaway tool costs at most `max_bytes` plus one chunk of memory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._partial = bytearray()
        self._skipping = False
        self.overlong = 0  # lines dropped for their length, for the caller's one warning

    def feed(self, chunk: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self._skipping:
                    self._partial += chunk[start:]
                    if len(self._partial) > self.max_bytes:
                        self._partial = bytearray()  # a new buffer: clear() would keep the capacity
                        self._skipping = True
                        self.overlong += 1
                return lines
            if self._skipping:
                self._skipping = False
            else:
                if self._partial:
                    self._partial += chunk[start:end]
                    line = bytes(self._partial)
                    self._partial = bytearray()
                else:
                    line = chunk[start:end]
                if len(line) > self.max_bytes:
                    self.overlong += 1
                else:
                    lines.append(line)
            start = end + 1


# --- the source ----------------------------------------------------------------------------------


class TrainiumSource:
    name = "trainium"

    def __init__(
        self,
        tool_path: str | None = None,
        pid: int | None = None,
        tree: bool = True,
        all_runtimes: bool = False,
        children_of: ChildrenOf | None = None,
        restart_backoff: tuple[float, float] = (1.0, 60.0),
        period: float = 1.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        grace: float = 1.0,
        device_glob: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`restart_backoff` is (first delay, longest delay) before restarting a child that died;
        `period` is neuron-monitor's (whole seconds, at least 1; the sampling interval suits);
        `grace` is how long close() waits after SIGTERM before SIGKILL; `device_glob` (e.g.
        "/dev/neuron*"), when given, must match a device node for the source to be available."""
        self._tool = Tool.find(TOOL, tool_path)
        self._configured = tool_path
        self._pid = pid if pid is not None else os.getpid()
        self._tree = tree
        self._all = all_runtimes
        self._children_of = children_of
        self._backoff_first, self._backoff_max = restart_backoff
        self.period = max(1, round(period))
        self._max_line = max_line_bytes
        self._grace = grace
        self._device_glob = device_glob
        self._clock = clock
        self._log = LogOnce(_logger)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._latest: tuple[float, Mapping[str, Any]] | None = None
        self.starts = 0  # children started so far (detect and the tests read it)

    # --- availability --------------------------------------------------------------------------------

    def probe(self) -> str | None:
        if self._tool.path is None:
            if self._configured:
                return f"{self._configured} is not an executable file"
            return f"{TOOL} not found on PATH"
        if self._device_glob is not None:
            import glob

            if not glob.glob(self._device_glob):
                return f"no Neuron device found ({self._device_glob})"
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("trainium")

    def describe(self) -> str:
        return f"{self._tool.path} -c <config>, period {self.period} s"

    @property
    def config_path(self) -> str | None:
        """Where the config is while the source runs (None before the first read and after close)."""
        return os.path.join(self._dir, "neuron-monitor.json") if self._dir is not None else None

    @property
    def child_pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    # --- reading -------------------------------------------------------------------------------------

    def read(self) -> list[Reading]:
        """The latest fresh report, shaped. Starts the supervisor on the first call; never waits on it."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set() and self._tool.path is not None:
                    self._thread = threading.Thread(
                        target=self._supervise, name="sysgauge-neuron-monitor", daemon=True
                    )
                    self._thread.start()
        latest = self._latest
        # A report older than this belongs to a child that stopped talking: no stale values.
        if latest is None or latest[0] < self._clock() - max(3.0 * self.period, self.period + 2.0):
            return []
        pids = None if self._all else self._tree_pids()
        readings = to_readings(latest[1], pids)
        if not readings and not self._all and runtimes_of(latest[1], None):
            self._log.info(
                "no-runtime",
                "sysgauge: neuron-monitor reports Neuron runtimes, none of them in the monitored process "
                "tree of pid %d (set neuron_all_runtimes to report every runtime on this host)",
                self._pid,
            )
        return readings

    def _tree_pids(self) -> set[int]:
        if not self._tree:
            return {self._pid}
        if self._children_of is None:
            self._children_of = default_children_of(psutil)
        return set(walk_tree(self._pid, self._children_of))

    # --- the supervisor thread -----------------------------------------------------------------------

    def _write_config(self) -> str:
        directory = tempfile.mkdtemp(prefix="sysgauge-neuron-")  # 0700, only this user
        path = os.path.join(directory, "neuron-monitor.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(monitor_config(self.period), handle)
        self._dir = directory
        return path

    def _supervise(self) -> None:
        try:
            config = self._write_config()
        except OSError as exc:
            self._log.warning("config", "sysgauge: cannot write the neuron-monitor config: %s", exc)
            return
        delay = self._backoff_first
        while not self._stopping.is_set():
            started = self._clock()
            try:
                why = self._run_once(config)
            except Exception as exc:  # a bug here must not end the source silently: restart like a death
                child = self._child
                if child is not None:
                    _terminate(child, self._grace)
                why = (f"error:{type(exc).__name__}", f"could not be read ({exc!r})")
            if why is None or self._stopping.is_set():
                return
            self._latest = None  # a dead child leaves no values behind
            if self._clock() - started >= _HEALTHY_RUN_S:
                delay = self._backoff_first
            self._log.warning(
                f"died:{why[0]}",
                "sysgauge: %s %s; restarting it (after %g s, then backing off up to %g s)",
                TOOL,
                why[1],
                delay,
                self._backoff_max,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self._backoff_max)

    def _run_once(self, config: str) -> tuple[str, str] | None:
        """Start one child and pump it until it ends: (key, why) when it died, None when stopping."""
        assert self._tool.path is not None
        with self._lock:
            if self._stopping.is_set():
                return None
            try:
                child = subprocess.Popen(
                    [self._tool.path, "-c", config],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its own process group: close() takes its helpers down too
                )
            except OSError as exc:
                return ("start", f"cannot be started: {exc.strerror or exc}")
            self._child = child
            self.starts += 1
        stderr = self._pump(child)
        if self._stopping.is_set():
            return None
        try:
            code = child.wait(self._grace)  # stdout closed: it is exiting, or it closed stdout and hangs on
        except subprocess.TimeoutExpired:
            _terminate(child, self._grace)
            code = child.returncode
        last = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        detail = f": {last[0][:200]}" if last[0] else ""
        return (f"exit:{code}", f"exited with status {code}{detail}")

    def _pump(self, child: subprocess.Popen[bytes]) -> bytes:
        """Read stdout (reports) and stderr (kept for the death message) until both close or we stop."""
        assert child.stdout is not None and child.stderr is not None
        splitter = LineSplitter(self._max_line)
        stderr = bytearray()
        selector = selectors.DefaultSelector()
        selector.register(child.stdout, selectors.EVENT_READ, True)
        selector.register(child.stderr, selectors.EVENT_READ, False)
        open_streams = 2
        try:
            while open_streams and not self._stopping.is_set():
                for key, _ in selector.select(0.25):
                    chunk = os.read(key.fd, _CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        open_streams -= 1
                    elif key.data:
                        overlong = splitter.overlong
                        for line in splitter.feed(chunk):
                            self._accept(line)
                        if splitter.overlong != overlong:
                            self._log.warning(
                                "overlong",
                                "sysgauge: a neuron-monitor line longer than %d bytes was skipped",
                                self._max_line,
                            )
                    else:
                        stderr += chunk
                        del stderr[: max(0, len(stderr) - _STDERR_KEPT)]
        finally:
            selector.close()
            child.stdout.close()
            child.stderr.close()
        return bytes(stderr)

    def _accept(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            report = json.loads(line)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; "[[[[..."
            report, problem = None, f"{type(exc).__name__}: {str(exc)[:120]}"
        else:
            problem = "not a JSON object"
        if not isinstance(report, dict):
            self._log.warning(
                "garbage", "sysgauge: a neuron-monitor line is not a report, skipped (%s)", problem
            )
            return
        self._latest = (self._clock(), report)

    # --- closing -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after `grace`), reap it, join the thread, remove the config."""
        with self._lock:
            self._stopping.set()
            child = self._child
        if child is not None:
            _terminate(child, self._grace)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._grace + 1.0)
        self._latest = None
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _terminate(child: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the child's process group, SIGKILL after `grace`, then reap: no zombie, no leftover.
    Signals go out before the reap, so the group id cannot have been reused by then."""
    if child.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            child.wait(grace if sig == signal.SIGTERM else 5.0)
            return
        except subprocess.TimeoutExpired:
            continue
