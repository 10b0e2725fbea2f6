"""Log each distinct failure once, not every tick."""

from __future__ import annotations

import logging
import threading

_MAX_REMEMBERED = 1024


class LogOnce:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log `message` the first time `key` is seen; return whether it was logged."""
        return self.log(logging.WARNING, key, message, *args)

    def info(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.INFO, key, message, *args)

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            # Bounded: a source whose error text churns (PIDs in messages) must not grow memory.
            if len(self._seen) >= _MAX_REMEMBERED:
                self._seen.clear()
            self._seen.add(key)
        self._logger.log(level, message, *args)
        return True
