"""A background thread per slow source (a tool that takes seconds), so the sampler's tick never waits for it:
the tick takes the latest complete reading, and a reading older than `stale_after` is dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sysgauge.sources.base import Reading


class Poller:
    def __init__(
        self,
        name: str,
        read: Callable[[], list[Reading]],
        interval: float,
        stale_after: float,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._read = read
        self._interval = interval
        self._stale_after = stale_after
        self._on_error = on_error
        self._latest: tuple[float, list[Reading]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sysgauge-{name}", daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def latest(self) -> list[Reading]:
        """The last good reading if fresh; starts the thread on first use."""
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
        latest = self._latest
        if latest is None or time.monotonic() - latest[0] > self._stale_after:
            return []
        return latest[1]

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                readings = self._read()
            except Exception as exc:  # the source's own errors: no reading this round, said once
                self._latest = None
                self.last_error = str(exc)
                self._on_error(exc)
            else:
                self._latest = (time.monotonic(), readings)
                self.last_error = None
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))
