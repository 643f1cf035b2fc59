"""The README stays true: its configuration table is what the CLI prints."""

from __future__ import annotations

import re

from click.testing import CliRunner

from flightsql_srv.cli import main
from tests.conftest import ROOT


def test_readme_config_table_matches_cli() -> None:
    printed = CliRunner().invoke(main, ["config-reference"]).output.strip()
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*?)\n<!-- config-reference:end -->", readme, re.S
    )
    assert block is not None, "README lost its config-reference markers"
    assert block.group(1).strip() == printed, "run: flightsql-srv config-reference"


def test_readme_quickstart_has_both_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "flightsql-srv serve" in readme
    assert ".venv/bin/python -m pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in ci
