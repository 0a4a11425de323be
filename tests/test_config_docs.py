"""docs/configuration.md must match the config models it is generated from."""

from __future__ import annotations

from pathlib import Path

from runtime.config_docs import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_configuration_reference_up_to_date():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is out of date; regenerate it with "
        "`python -m runtime.config_docs > docs/configuration.md`"
    )


def test_every_field_documented():
    undocumented = [line for line in render().splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert undocumented == []
