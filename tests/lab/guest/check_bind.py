"""Binding through the project against the real kernel: ``bind --group`` then ``restore``
with the CLI, then ``kill -9`` of a bind stopped before each of its sysfs writes, then
``restore``. Facts: drivers and overrides as the kernel shows them at every point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import kernel_facts as kf
from kvlab import topology

from kata_vfio import binding

# One device named per group shape; --group takes the rest of each group.
NAMED = (
    topology.NIC_MULTI[0],
    topology.NIC_BRIDGED[0],
    topology.NIC_SWITCH,
    topology.NIC_SINGLE,
    topology.NIC_NUMA,
)
ENDPOINTS = sorted(e for shape in topology.EXPECTED_ENDPOINTS.values() for e in shape)
# The group the kill points are taken in: two functions, so there are half-bound states.
KILLED_GROUP = topology.NIC_MULTI


def _state(bdfs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {bdf: {"driver": kf.driver_of(bdf), "override": kf.driver_override(bdf)} for bdf in bdfs}


def _cli(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "kata_vfio", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        output = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        output = done.stdout[-2000:]
    return {
        "argv": list(args),
        "rc": done.returncode,
        "output": output,
        "stderr": done.stderr[-2000:],
    }


def _bind_group_then_restore(state_dir: str) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "before": _state(ENDPOINTS),
        "vfio_pci_loaded_before": kf.has_driver("vfio-pci"),
    }
    try:
        facts["bind"] = _cli("bind", "--group", "--state-dir", state_dir, *NAMED)
        facts["bound"] = _state(ENDPOINTS)
        facts["journal"] = sorted(str(e.bdf) for e in binding.journal(state_dir))
        again = binding.bind(list(NAMED), group=True, state_dir=state_dir)
        facts["again_actions"] = sorted({d.action for d in again.devices})
        facts["again_writes"] = len(again.writes)
        facts["restore"] = _cli("restore", "--state-dir", state_dir)
        facts["restored"] = _state(ENDPOINTS)
        facts["journal_after"] = [str(e.bdf) for e in binding.journal(state_dir)]
    finally:
        # Whatever failed above, later checks need the devices back.
        if binding.journal(state_dir):
            binding.restore(state_dir=state_dir)
    return facts


def _stopping_writer(stop_before: int) -> Callable[[str, bytes], None]:
    """A sysfs writer that does the real write, but stops this process before write N."""
    count = 0

    def write(path: str, data: bytes) -> None:
        nonlocal count
        if count == stop_before:
            os.kill(os.getpid(), signal.SIGSTOP)  # the parent looks, then sends SIGKILL
        count += 1
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    return write


def _kill_at(stop_before: int, state_dir: str) -> dict[str, Any]:
    """Fork a bind of KILLED_GROUP, SIGKILL it while stopped before write ``stop_before``."""
    pid = os.fork()
    if pid == 0:  # child: bind, then leave without running the parent's cleanup
        code = 0
        try:
            binding.bind(
                [KILLED_GROUP[0]],
                group=True,
                state_dir=state_dir,
                sysfs_writer=_stopping_writer(stop_before),
            )
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, os.WUNTRACED)
    point: dict[str, Any] = {"stop_before_write": stop_before, "stopped": os.WIFSTOPPED(status)}
    if os.WIFSTOPPED(status):
        point["at_kill"] = _state(KILLED_GROUP)
        point["journal_at_kill"] = sorted(str(e.bdf) for e in binding.journal(state_dir))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        point["killed"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    else:
        point["exit_code"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        point["at_kill"] = _state(KILLED_GROUP)
    report = binding.restore(state_dir=state_dir)
    point["restore_actions"] = [d.action for d in report.devices]
    point["after_restore"] = _state(KILLED_GROUP)
    point["journal_after"] = [str(e.bdf) for e in binding.journal(state_dir)]
    return point


def _kill_points(state_dir: str) -> dict[str, Any]:
    plan = binding.bind([KILLED_GROUP[0]], group=True, state_dir=state_dir, dry_run=True)
    writes = len(plan.writes)
    points = [_kill_at(n, state_dir) for n in range(writes + 1)]
    return {"planned_writes": writes, "original": _state(KILLED_GROUP), "points": points}


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Both scenarios, each with its own journal directory."""
    del context
    with tempfile.TemporaryDirectory(prefix="kvlab-journal-") as first:
        group_facts = _bind_group_then_restore(first)
    with tempfile.TemporaryDirectory(prefix="kvlab-journal-") as second:
        kill_facts = _kill_points(second)
    return {"bind_group": group_facts, "kill": kill_facts}
