"""Hints are worded in Python, from data: the Rust core spells no command or option, every
remedy it can name has words, and those words name only commands and options that exist."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from kata_vfio.cli import build_parser
from kata_vfio.host import render

ROOT = Path(__file__).resolve().parents[2]
CORE_SOURCES = [ROOT / "rust/kata-vfio-core/src", ROOT / "rust/kata-vfio-py/src"]
# The binding journal's on-disk header: a file format, kept so existing journals still read.
JOURNAL_HEADER = "# kata-vfio binding journal v1: `kata-vfio restore` puts this device back"
CLI_TEXT = re.compile(r"kata-vfio [a-z]|--[a-z][a-z-]+")
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)


def _code_without_comments(text: str) -> str:
    """A Rust file's code before its unit tests, without whole-line comments."""
    code = text.split("#[cfg(test)]\nmod tests", maxsplit=1)[0]
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("//"))


def _core_literals() -> list[tuple[str, str]]:
    return [
        (path.name, literal)
        for root in CORE_SOURCES
        for path in sorted(root.rglob("*.rs"))
        for literal in LITERAL.findall(_code_without_comments(path.read_text()))
    ]


def test_the_core_spells_no_command_or_option() -> None:
    literals = _core_literals()
    assert len(literals) > 500, "the scan of the Rust sources found too little to be real"
    cli_text = [(name, lit) for name, lit in literals if CLI_TEXT.search(lit)]
    assert cli_text == [("journal.rs", JOURNAL_HEADER)]


def _remedy_names() -> set[str]:
    source = (ROOT / "rust/kata-vfio-core/src/error.rs").read_text()
    body = source[source.index("impl Remedy") :]
    return set(re.findall(r'Self::\w+ => "([a-z-]+)"', body))


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_remedy_has_words_naming_only_real_commands_and_options() -> None:
    names = _remedy_names()
    assert {"force", "restore", "check-iommu", "bind-group", "list-devices"} <= names
    commands = _commands()
    options = {o for sub in commands.values() for o in sub._option_string_actions}
    worded = {name: render.remedy_text(name) for name in names}
    assert [name for name, text in worded.items() if text == name] == [], "remedies without words"
    for text in [*worded.values(), render.missing_group_node_hint(7)]:
        for command, option in re.findall(r"`kata-vfio (\w+)(?: (--[a-z-]+))?", text):
            assert command in commands, text
            if option:
                assert option in commands[command]._option_string_actions, text
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]+", text):
            assert option in options, text


def test_a_hint_with_remedies_reads_as_one_line() -> None:
    assert render.with_remedies("stop using them first", ("force",)) == (
        "stop using them first; --force (force=True) acts anyway and says what it overrode"
    )
    assert render.with_remedies(None, ()) is None
    assert render.with_remedies("as is", ()) == "as is"
    assert render.remedy_text("something-new") == "something-new"
