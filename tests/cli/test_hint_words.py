"""Hints are worded in Python, from data: the Rust core spells no command or option, every
remedy it can name has words, and those words name only commands and options that exist."""

from __future__ import annotations

import argparse
import ast
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


PACKAGE = ROOT / "python" / "kata_vfio"
MENTION = re.compile(r"kata-vfio((?: +(?:--?[a-z][a-z0-9-]*|[a-z][a-z0-9-]*))+)")
# Words after "kata-vfio" in prose ("kata-vfio drives QEMU"), not commands.
PROSE = {"drives", "opens", "on", "device", "has", "without"}


def _texts_of_the_package() -> list[tuple[str, str]]:
    """(file, text) of every string literal of the package but docstrings: the messages,
    hints and remedies it can print (f-strings' literal parts included)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        found += [
            (path.name, node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ]
    return found


def _command_problem(words: list[str]) -> str | None:
    """Why ``kata-vfio WORDS...`` names no real command or option, or None when it does."""
    parser = build_parser()
    global_options = set(parser._option_string_actions)
    while words and words[0] in global_options:
        words = words[1:]
    if not words or (words[0] in PROSE):
        return None
    current: argparse.ArgumentParser = parser
    path: list[str] = []
    for word in words:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if word.startswith("-"):
            if word not in current._option_string_actions and word not in global_options:
                return f"no option {word} for `kata-vfio {' '.join(path)}`"
        elif subs and word in subs[0].choices:
            current = subs[0].choices[word]
            path.append(word)
        elif subs:
            return f"`kata-vfio {' '.join([*path, word])}` is no command"
        else:
            break  # a leaf's argument or the sentence going on
    return None


def test_every_command_the_package_mentions_exists() -> None:
    texts = _texts_of_the_package()
    mentions = [(name, m.group(1).split()) for name, text in texts for m in MENTION.finditer(text)]
    assert len(mentions) > 40, "the scan found too few mentions to be real"
    problems = [f"{name}: {why}" for name, words in mentions if (why := _command_problem(words))]
    assert problems == []


def test_the_checker_catches_a_command_that_does_not_exist() -> None:
    assert _command_problem(["iommu"]) == "`kata-vfio iommu` is no command"
    assert _command_problem(["qemu", "stop"]) == "`kata-vfio qemu stop` is no command"
    assert _command_problem(["bind", "--nope"]) == "no option --nope for `kata-vfio bind`"
    assert _command_problem(["--sample", "groups", "shows", "why"]) is None
    assert _command_problem(["qemu", "resume", "--qmp"]) is None
