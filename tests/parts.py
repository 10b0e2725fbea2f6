"""Real parts the tests need (a compiler, node_exporter, Go for the Collector): skip without them, except
under CI=true, where a missing part is a failure."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: every part must be installed)")
    pytest.skip(message)
