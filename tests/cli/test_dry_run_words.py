"""Every ``--dry-run`` says what it *would* do: its output is never mistaken for a change made.

Found in the parser: each subcommand with ``--dry-run`` is run with it on a copy of the sample
host; the world's files are unchanged afterwards."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from cli_world import World, build_world, invocations, leaf_commands

from kata_vfio import binding
from kata_vfio.testing.kernel_sim import KernelSim

DRY_RUNNABLE = sorted(
    path for path, parser in leaf_commands() if "--dry-run" in parser._option_string_actions
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("dry"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_commands_with_a_dry_run_are_found() -> None:
    assert {("bind",), ("unbind",), ("restore",), ("cdi", "inject"), ("qemu", "run")} <= set(
        DRY_RUNNABLE
    )


@pytest.fixture
def kernel(world: World, monkeypatch: pytest.MonkeyPatch) -> KernelSim:
    """The simulated kernel behind the world's binding files (the CLI has no hook)."""
    sim = KernelSim.for_host(world.host)
    for name in ("bind", "unbind", "restore"):
        original = getattr(binding, name)
        monkeypatch.setattr(binding, name, functools.partial(original, sysfs_writer=sim.write))
    return sim


@pytest.mark.parametrize("path", DRY_RUNNABLE, ids=" ".join)
def test_a_dry_run_says_would_and_changes_nothing(
    world: World, kernel: KernelSim, path: tuple[str, ...]
) -> None:
    argv = [a for a in invocations(world)[path] if a != "--dry-run"]
    initial = kernel.state()
    if path == ("restore",):
        # Something to restore, as the journal of a real bind holds.
        assert world.run("bind", "--only", "0000:19:00.1").code == 0
        argv = ["restore", "0000:19:00.1"]
    before = _files(world.root / "host" / "sys") | _files(Path(world.container))
    before |= _files(Path(world.oci_spec).parent / "cdi")
    result = world.run(*argv, "--dry-run")
    assert result.code == 0, result
    assert "would" in result.out, result.out
    after = _files(world.root / "host" / "sys") | _files(Path(world.container))
    assert after | _files(Path(world.oci_spec).parent / "cdi") == before
    if path == ("restore",):
        assert world.run("restore").code == 0
        assert kernel.state() == initial
