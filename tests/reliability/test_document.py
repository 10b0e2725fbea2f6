"""docs/reliability.md names tests as its evidence: each one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_test_the_reliability_document_names_exists() -> None:
    document = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"\b(test_\w+)`", document)) | set(re.findall(r"::(test_\w+)", document))
    defined = {
        name
        for path in (REPO / "tests").rglob("test_*.py")
        for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert len(named) > 40
    assert sorted(named - defined) == []
