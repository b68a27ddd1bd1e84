"""One exit-code contract for every subcommand (kata_vfio.cli._exit): 0 ok, 1 a finding, 2 bad
usage or bad input, never a traceback; a refusal of bad input names it.

Every subcommand is found in the argument parser and driven with generated bad values (huge
numbers, missing paths, directories for files, garbage addresses, empty strings, any
unicode) on a private copy of the sample host. The commands that would serve forever
(``k8s device-plugin``, ``k8s dra-plugin``, ``qemu run``) have their serving call replaced by
a stub that returns at once: everything before it, the argument checks included, runs as it
is.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_world import CONFIG, World, build_world, leaf_commands, required_groups, value_actions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kata_vfio._echo import echo
from kata_vfio.cli import main
from kata_vfio.cli._exit import ExitCode, exit_code_for, report
from kata_vfio.errors import (
    BdfError,
    BindError,
    DeviceNotFoundError,
    HostIOError,
    InvalidInputError,
    PlanError,
)

LEAVES = dict(leaf_commands())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as patch:
        world = build_world(root)
        # The serving calls: they would run until a signal; what leads to them still runs.
        import kata_vfio.cli.qemu as cli_qemu
        import kata_vfio.k8s.agent as agent

        patch.setattr(agent, "run_device_plugin", lambda config, stop: None)
        import kata_vfio.cli.k8s as cli_k8s
        import kata_vfio.k8s.dra.plugin as dra_plugin

        patch.setattr(dra_plugin, "run_dra_plugin", lambda config, stop, claims, slices: None)
        patch.setattr(cli_k8s, "_api_ports", lambda kubeconfig, driver, node: (None, None))
        patch.setattr(cli_qemu, "run_sandbox", lambda plan, **kwargs: None)
        # Relative paths the generator makes stay inside the world.
        patch.chdir(world.work)
        yield world


def _plausible(world: World, path: tuple[str, ...], dest: str) -> str:
    """A value that a real user would give for a required argument."""
    table = {
        "bdfs": "0000:18:00.0",
        "bdf": "0000:18:00.0",
        "vm_memory": "16G",
        "files": world.spec_file,
        "oci_spec": world.oci_spec,
        "sandbox_plan": world.plan,
        "qmp": world.dead_socket,
        "device": "/dev/vfio/14" if path[0] == "qemu" else "nvidia.com/pgpu=0",
        "bundle": world.container if path == ("sandbox", "container") else world.sandbox,
        "ids": "hostdev0",
        "driver_name": "vfio.kata-vfio.io",
        "node_name": "node-1",
    }
    return table[dest]


def _extras(world: World, path: tuple[str, ...]) -> list[str]:
    """Options that let a planning command get past its configuration to the input tested."""
    if path in (("sandbox", "plan"), ("qemu", "run")):
        return [f"--config={CONFIG}", f"--spec-dir={world.spec_dir}", "--no-pod-resources"]
    return []


def _bad_values(world: World) -> st.SearchStrategy[str]:
    text = st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
        max_size=40,
    )
    return st.one_of(
        st.sampled_from(
            [
                "",
                "99999999999999999999",
                "-1",
                "1e999",
                "nan",
                "0x",
                "zz:zz.z",
                "0000:ff:1f.7",
                "x" * 5000,
                "9" * 4000,
                "a/../../b",
                str(world.root / "missing" / "file"),
                str(world.root),  # a directory where a file or socket is meant
                world.spec_file,  # a file where a directory is meant
                world.dead_socket,
            ]
        ),
        st.integers(min_value=10**18, max_value=10**60).map(str),
        text,
    )


def _option(action: argparse.Action, value: str) -> list[str]:
    if action.option_strings:
        return [f"{action.option_strings[0]}={value}"]  # '=' lets a value start with '-'
    return [value]


@st.composite
def _argv(
    draw: st.DrawFn, world: World, path: tuple[str, ...]
) -> tuple[list[str], list[tuple[argparse.Action, str]]]:
    """An argv for ``path`` with at least one bad value (when it takes any), and the bad
    (action, value) pairs."""
    parser = LEAVES[path]
    actions = value_actions(parser)
    grouped = {a for group in required_groups(parser) for a in group}
    chosen = {group[0] for group in required_groups(parser)}
    bad: list[tuple[argparse.Action, str]] = []
    args: list[str] = []
    corrupt = set(draw(st.sets(st.sampled_from(actions), min_size=1))) if actions else set()
    for action in actions:
        needed = (action.required and action.nargs != "*") or action in chosen
        if action in grouped and action not in chosen and action not in corrupt:
            continue
        if action in corrupt:
            value = draw(_bad_values(world))
            bad.append((action, value))
            args += _option(action, value)
        elif needed:
            args += _option(action, _plausible(world, path, action.dest))
    named = {option for action in corrupt for option in action.option_strings}
    args += [e for e in _extras(world, path) if e.split("=")[0] not in named]
    positional = [a for a in args if not a.startswith("--")]
    options = [a for a in args if a.startswith("--")]
    return [*path, *options, *positional], bad


def _rust_debug(value: str) -> str:
    """How the Rust core quotes a value (``{:?}``): escapes, and \\u{..} for the unprintable."""
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
    return "".join(named.get(c, c if c.isprintable() else f"\\u{{{ord(c):x}}}") for c in value)


def _names_one(err: str, bad: list[tuple[argparse.Action, str]]) -> bool:
    """The message names one of the bad inputs: the option, or the value (as typed, quoted
    or cut short as kata_vfio._echo does)."""
    for action, value in bad:
        names = [*action.option_strings, str(action.metavar or action.dest)]
        if value.strip():
            names += [value[:24], repr(value)[:24], echo(value)[:24], value.strip()[:24]]
            names.append(_rust_debug(value)[:24])
        else:
            names += [repr(value), f'"{value}"', "empty"]
        if any(name and name in err for name in names):
            return True
    return False


def _check(world: World, argv: list[str], bad: list[tuple[argparse.Action, str]]) -> None:
    result = world.run(*argv)
    assert result.code in (0, 1, 2), (argv, result)
    for stream in (result.out, result.err):
        assert "Traceback" not in stream, (argv, stream)
        assert "internal error" not in stream, (argv, stream)
    if result.code == ExitCode.USAGE:
        assert result.err.startswith("kata-vfio: "), (argv, result)
        assert len(result.err) < 3000, "a huge input is echoed cut short"
        if bad:
            assert _names_one(result.err, bad), (argv, result.err)


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_every_subcommand_keeps_the_contract_on_bad_input(
    world: World, path: tuple[str, ...]
) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_argv(world, path))
    def check(case: tuple[list[str], list[tuple[argparse.Action, str]]]) -> None:
        _check(world, *case)

    check()


def _definitely_bad(world: World, action: argparse.Action) -> list[str]:
    """Values no argument accepts: empty, a huge number, and for a path the wrong kind."""
    values = ["", "9" * 4000]
    kind = getattr(action.type, "__name__", "")
    if kind in ("input_file", "bundle_dir", "unix_socket", "socket_or_missing"):
        values += [str(world.root)]  # a directory
    if kind in ("input_file", "bundle_dir", "unix_socket", "input_dir"):
        values += [str(world.root / "missing")]
    if kind in ("input_dir", "directory_or_missing"):
        values += [world.spec_file]  # a file
    return values


CASES = [
    (path, action.dest)
    for path, parser in sorted(LEAVES.items())
    for action in value_actions(parser)
    if action.choices is None
]


@pytest.mark.parametrize(("path", "dest"), CASES, ids=[f"{' '.join(p)}:{d}" for p, d in CASES])
def test_a_definitely_bad_value_is_refused_as_usage_and_named(
    world: World, path: tuple[str, ...], dest: str
) -> None:
    parser = LEAVES[path]
    action = next(a for a in value_actions(parser) if a.dest == dest)
    others = [a for a in value_actions(parser) if a is not action]
    grouped = {a for group in required_groups(parser) for a in group}
    base: list[str] = []
    for other in others:
        first_of_group = any(
            other is group[0] and action not in group for group in required_groups(parser)
        )
        if (other.required and other.nargs != "*" and other not in grouped) or first_of_group:
            base += _option(other, _plausible(world, path, other.dest))
    extras = [e for e in _extras(world, path) if e.split("=")[0] not in action.option_strings]
    for value in _definitely_bad(world, action):
        argv = [*path, *_option(action, value), *extras, *base]
        if not action.option_strings:
            argv = [*path, *extras, *base, value]
        result = world.run(*argv)
        assert result.code == ExitCode.USAGE, (argv, result)
        assert _names_one(result.err, [(action, value)]), (argv, result.err)
        assert "Traceback" not in result.err


def test_the_codes_of_the_error_classes() -> None:
    assert exit_code_for(BdfError("x")) == ExitCode.USAGE
    assert exit_code_for(InvalidInputError("x")) == ExitCode.USAGE
    assert exit_code_for(DeviceNotFoundError("x")) == ExitCode.USAGE
    assert exit_code_for(PlanError("x")) == ExitCode.FINDING
    assert exit_code_for(BindError("x")) == ExitCode.FINDING
    assert exit_code_for(HostIOError("x", errno=13, path="/p")) == ExitCode.FINDING
    assert exit_code_for(OverflowError("x")) == ExitCode.FINDING


def test_an_error_from_outside_the_package_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert report(PermissionError(13, "Permission denied", "/x" * 100)) == ExitCode.FINDING
    err = capsys.readouterr().err
    assert err.startswith("kata-vfio: error: ") and "Permission denied" in err
    assert len(err.splitlines()) == 1 and len(err) < 200
    assert report(OverflowError("int too large")) == ExitCode.FINDING
    err = capsys.readouterr().err
    assert "internal error: OverflowError: " in err and "KATA_VFIO_DEBUG=1" in err


def test_an_uncreatable_cache_directory_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    assert main(["--sample", "scan"]) == ExitCode.FINDING
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err
    assert str(blocker) in err and "XDG_CACHE_HOME" in err
    assert blocker.read_text() == "not a directory\n"
