"""docs/configuration.md's table is the settings' own (``rdist config --markdown``)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from rdist.cli import main
from rdist.settings import DOC_BEGIN as BEGIN
from rdist.settings import DOC_END as END
from rdist.settings import SETTINGS, markdown_table, rewrite_doc

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def documented_table() -> str:
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} lost its table markers"
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_the_documented_table_matches_the_settings() -> None:
    assert documented_table() == markdown_table(), (
        "docs/configuration.md is out of date: python -m rdist.settings docs/configuration.md"
    )


def test_rewriting_the_doc_replaces_only_its_table() -> None:
    stale = f"intro\n{BEGIN}| old |\n{END}\noutro\n"
    assert rewrite_doc(stale) == f"intro\n{BEGIN}{markdown_table()}{END}\noutro\n"


def test_the_table_has_a_row_per_setting_with_its_env_form_and_default() -> None:
    rows = [line for line in markdown_table().splitlines() if line.startswith("| `")]
    assert len(rows) == len(SETTINGS)
    for setting, row in zip(SETTINGS, rows):
        assert row.startswith(f"| `{setting.name}` | `{setting.env}`")
        assert setting.readers[0] in row


def test_rdist_config_markdown_prints_the_table() -> None:
    result = CliRunner().invoke(main, ["config", "--markdown"])
    assert result.exit_code == 0 and result.output == markdown_table()
