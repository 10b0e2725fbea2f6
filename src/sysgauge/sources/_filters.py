"""Include/exclude filtering of device and interface names."""

from __future__ import annotations

import re
from collections.abc import Sequence


class NameFilter:
    """Keeps a name that full-matches an include pattern (or there are none) and no exclude pattern."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = [re.compile(p) for p in include]
        self._exclude = [re.compile(p) for p in exclude]
        self._decided: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        decided = self._decided.get(name)
        if decided is None:
            decided = (not self._include or any(p.fullmatch(name) for p in self._include)) and not any(
                p.fullmatch(name) for p in self._exclude
            )
            # Names are devices and interfaces; bound the memo in case a host churns veth names.
            if len(self._decided) > 4096:
                self._decided.clear()
            self._decided[name] = decided
        return decided
