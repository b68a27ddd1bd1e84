"""A property of the journal: whatever step a bind (or a restore) is killed at with SIGKILL,
running ``restore`` afterwards gives back exactly the original drivers and overrides.

Each example forks; the child runs the real bind through the kernel simulator and kills
itself (SIGKILL, no cleanup of any kind) just before its k-th sysfs write. The parent then
restores from the journal the child left on disk."""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GPU_DEVICES, LAB_DEVICES, binding_options, build
from kata_vfio import binding
from kata_vfio.testing.kernel_sim import KernelSim

# Endpoints of the lab groups, by group: single, switch, two-function, behind a bridge,
# GPU + audio, the ICH9 trio.
GROUPS: dict[int, tuple[str, ...]] = {
    9: ("0000:01:00.0",),
    11: ("0000:04:00.0",),
    12: ("0000:05:00.0", "0000:05:00.1"),
    13: ("0000:07:01.0", "0000:07:02.0"),
    41: ("0000:81:00.0", "0000:81:00.1"),
    8: ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"),
}
ENDPOINTS = sorted({bdf for members in GROUPS.values() for bdf in members})


def crashing(sim: KernelSim, crash_before: int) -> Callable[[str, bytes], None]:
    """A sysfs writer that SIGKILLs its own process before write number ``crash_before``."""
    count = 0

    def write(path: str, data: bytes) -> None:
        nonlocal count
        if count == crash_before:
            os.kill(os.getpid(), signal.SIGKILL)
        count += 1
        sim.write(path, data)

    return write


def in_child(action: Callable[[], object]) -> int:
    """Runs ``action`` in a forked child; returns its wait status (killed or exited)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        code = 0
        try:
            action()
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def perturb(sim: KernelSim, host_sys: str, rng: random.Random) -> None:
    """Varies the starting point: some endpoints unbound, some with their own driver as
    override (as driverctl leaves it)."""
    for bdf in ENDPOINTS:
        driver, _ = sim.state()[bdf]
        choice = rng.randrange(4)
        if choice == 0 and driver is not None:
            sim.write(f"{host_sys}/bus/pci/drivers/{driver}/unbind", bdf.encode())
        elif choice == 1 and driver is not None:
            sim.write(f"{host_sys}/bus/pci/devices/{bdf}/driver_override", driver.encode())


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    targets=st.lists(st.sampled_from(ENDPOINTS), min_size=1, max_size=3, unique=True),
    group_mode=st.sampled_from([None, True, False]),
    bind_crash=st.integers(min_value=0, max_value=24),
    restore_crash=st.integers(min_value=0, max_value=24) | st.none(),
    seed=st.integers(min_value=0, max_value=2**16),
    drop_entries=st.booleans(),
)
def test_kill_at_any_step_then_restore_gives_back_the_original(
    scratch_root: Path,
    targets: list[str],
    group_mode: bool | None,
    bind_crash: int,
    restore_crash: int | None,
    seed: int,
    drop_entries: bool,
) -> None:
    work = Path(tempfile.mkdtemp(dir=scratch_root))
    try:
        host = build(work / "host", LAB_DEVICES + GPU_DEVICES)
        sim = KernelSim.for_host(host)
        # What each driver matches is fixed by the original bindings, not by whatever is
        # bound when a later simulator starts.
        tables = sim.tables
        perturb(sim, host.sysfs_root, random.Random(seed))
        original = sim.state()
        nodes = sorted(os.listdir(os.path.join(host.dev_root, "vfio")))
        opts: dict[str, Any] = binding_options(host, sim, work / "state")

        def bind() -> object:
            child_sim = KernelSim.for_host(host, id_tables=tables)
            # force: the ICH9 trio holds platform functions (LPC, SMBus), which bind refuses
            # otherwise; the journal is what is under test here.
            return binding.bind(
                targets,
                group=group_mode,
                force=True,
                **{**opts, "sysfs_writer": crashing(child_sim, bind_crash)},
            )

        status = in_child(bind)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, status
        if drop_entries and bind_crash == 0:
            # Killed while writing the journal: the first device's entry may not have made it
            # (no sysfs write happened yet: each entry precedes its device's first write),
            # and a half-written temporary file is left behind.
            entries = sorted(Path(opts["state_dir"]).glob("*.journal"))
            for entry in entries[: len(entries) // 2]:
                entry.unlink()
            (Path(opts["state_dir"]) / ".0000:01:00.0.journal.tmp").write_text("half")

        if restore_crash is not None:

            def restore() -> object:
                child_sim = KernelSim.for_host(host, id_tables=tables)
                return binding.restore(
                    **{**opts, "sysfs_writer": crashing(child_sim, restore_crash)}
                )

            in_child(restore)

        final = KernelSim.for_host(host, id_tables=tables)
        binding.restore(**{**opts, "sysfs_writer": final.write})
        assert final.state() == original
        assert binding.journal(opts["state_dir"]) == ()
        assert sorted(os.listdir(os.path.join(host.dev_root, "vfio"))) == nodes
    finally:
        shutil.rmtree(work, ignore_errors=True)
