"""A private copy of the sample host with everything a command may need around it (bundles, a
CDI spec directory, a stored sandbox plan, a socket nobody answers on), and a way to run the
CLI in-process with its output captured.

Shared by the tests that drive every subcommand (exit codes, JSON keys, hint words)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kata_vfio.cli import build_parser, main
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "python" / "kata_vfio" / "kata" / "samples"
CONFIG = SAMPLES / "configuration-qemu-gpu.toml"


@dataclass(frozen=True)
class Result:
    """What one in-process run of ``kata-vfio`` gave."""

    code: int
    out: str
    err: str


@dataclass(frozen=True)
class World:
    """The fake host and the files around it (all under ``root``)."""

    root: Path
    host: FakeHost
    roots: tuple[str, ...]
    sandbox: str
    container: str
    spec_dir: str
    spec_file: str
    oci_spec: str
    plan: str
    dead_socket: str
    work: str

    def run(self, *argv: str) -> Result:
        """``kata-vfio --sysfs-root ... ARGV`` in this process."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*self.roots, *argv])
        return Result(int(code), out.getvalue(), err.getvalue())


def build_world(root: Path) -> World:
    """Builds the world under ``root`` (a few seconds: the sample host is written out)."""
    host = sample_host(root / "host")
    roots = (
        "--sysfs-root", host.sysfs_root, "--dev-root", host.dev_root,
        "--proc-root", host.proc_root,
    )  # fmt: skip
    for name in ("sandbox", "container"):
        shutil.copytree(SAMPLES / name, root / name)
    spec_dir = root / "cdi"
    dead = root / "dead.sock"
    with socket.socket(socket.AF_UNIX) as bound:  # bound, then closed: connect is refused
        bound.bind(str(dead))
    work = root / "a" / "b" / "c" / "d" / "work"  # relative paths stay inside root
    work.mkdir(parents=True)
    world = World(
        root=root,
        host=host,
        roots=roots,
        sandbox=str(root / "sandbox"),
        container=str(root / "container"),
        spec_dir=str(spec_dir),
        spec_file=str(spec_dir / "nvidia.com-pgpu.yaml"),
        oci_spec=str(root / "oci.json"),
        plan=str(root / "plan.json"),
        dead_socket=str(dead),
        work=str(work),
    )
    made = world.run(
        "cdi", "generate", "--kind", "nvidia.com/pgpu", "--naming", "index",
        "--output-dir", str(spec_dir),
    )  # fmt: skip
    assert made.code == 0, made.err
    shutil.copy(root / "container" / "config.json", world.oci_spec)
    planned = world.run(*plan_args(world), "--json")
    assert planned.code == 0, planned.err
    Path(world.plan).write_text(planned.out)
    assert json.loads(planned.out)["devices"], "the sample plan should hold a device"
    return world


def plan_args(world: World) -> list[str]:
    """``sandbox plan`` of the sample sandbox bundle, fully specified."""
    return [
        "sandbox", "plan", "--bundle", world.sandbox, "--config", str(CONFIG),
        "--spec-dir", world.spec_dir, "--runtime-dir", str(world.root / "run"),
        "--no-pod-resources",
    ]  # fmt: skip


def invocations(world: World) -> dict[tuple[str, ...], list[str]]:
    """A real invocation of each subcommand that runs on the world without a live VM."""
    plan = plan_args(world)
    return {
        ("scan",): ["scan", "--details"],
        ("groups",): ["groups", "--all"],
        ("check",): ["check", "0000:18:00.0", "0000:19:00.0"],
        ("doctor",): ["doctor", "--vm-memory", "16G"],
        ("bind",): ["bind", "--dry-run", "0000:19:00.0"],
        ("unbind",): ["unbind", "--dry-run", "0000:18:00.0"],
        ("restore",): ["restore", "--list"],
        ("memlock",): ["memlock", "16G"],
        ("cdi", "list"): ["cdi", "--spec-dir", world.spec_dir, "list"],
        ("cdi", "validate"): ["cdi", "validate", world.spec_file],
        ("cdi", "generate"): ["cdi", "generate"],
        ("cdi", "inject"): [
            "cdi", "--spec-dir", world.spec_dir, "inject", "--oci-spec", world.oci_spec,
            "--device", "nvidia.com/pgpu=0", "--dry-run",
        ],
        ("sandbox", "plan"): plan,
        ("sandbox", "container"): [
            "sandbox", "container", "--bundle", world.sandbox, "--sandbox-plan", world.plan,
        ],
        ("qemu", "run"): ["qemu", "run", *plan[2:], "--dry-run"],
        ("k8s", "inventory"): ["k8s", "inventory"],
        ("k8s", "manifests"): ["k8s", "manifests"],
    }  # fmt: skip


def leaf_commands(
    parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable subcommand (``scan``, ``cdi list``...), found in the parser itself, so a
    new one is covered without a change here."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaf_commands(sub, (*path, name))


def value_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments of a subcommand that take a value (flags and --help left out)."""
    return [
        a
        for a in parser._actions
        if a.nargs != 0
        and not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and not (a.option_strings and a.const is not None and a.nargs == 0)
    ]


def required_groups(parser: argparse.ArgumentParser) -> list[list[argparse.Action]]:
    """Mutually exclusive groups of which one member must be given."""
    return [list(g._group_actions) for g in parser._mutually_exclusive_groups if g.required]
