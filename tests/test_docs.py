"""docs/reliability.md names, for each case, the tests that pin it: every one of them exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_test_named_in_the_reliability_table_exists() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = {
        name.strip().split("::")[-1]
        for brackets in re.findall(r"\[([^\]]*test_[^\]]*)\]", doc)
        for name in brackets.split(",")
        if name.strip().split("::")[-1].startswith("test_")
    }
    defined = set()
    for path in (REPO / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), flags=re.M))
    assert len(named) > 50  # the table is read: a change of its format would otherwise pass silently
    assert sorted(named - defined) == []
