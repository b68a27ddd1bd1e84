"""SIGKILL at every step of a prepare and an unprepare, in a real process, then a restart: every
device is back on the driver it had (or, for a killed unprepare, the unprepare is finished),
no CDI spec or temporary file is left, the checkpoint and the journal are empty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dra_crash_child import CLAIM_FILE, TABLES_FILE, rig_for
from dra_fakes import DRIVER, GPU, PAIR, make_rig

from kata_vfio import binding
from kata_vfio.k8s.dra.ports import ClaimRef, device_name
from kata_vfio.k8s.dra.prepare import Deadline

UID = "c7a1e2f0-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
CHILD = Path(__file__).with_name("dra_crash_child.py")
# A prepare of the two-function e1000e group and the GPU with its audio function: four
# devices, three sysfs writes each (driver_override, unbind, drivers_probe).
PREPARE_WRITES = 12
PREPARE_STEPS = ["preparing-recorded", f"bound {device_name(PAIR)}", "spec-written"]
UNPREPARE_STEPS = ["unpreparing-recorded", "restored", "spec-removed"]


def setup(root: Path) -> dict[str, tuple[str | None, str | None]]:
    rig = make_rig(root)
    (root / TABLES_FILE).write_text(
        json.dumps({d: sorted(ids) for d, ids in rig.sim.tables.items()})
    )
    claim = {"uid": UID, "name": "pair-gpu", "bdfs": [PAIR, GPU]}
    (root / CLAIM_FILE).write_text(json.dumps(claim))
    return rig.sim.state()


def run_child(root: Path, verb: str, point: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), *sys.path])}
    return subprocess.run(
        [sys.executable, str(CHILD), str(root), verb, point],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def assert_clean(root: Path, before: dict[str, tuple[str | None, str | None]]) -> None:
    rig = rig_for(root)
    preparer = rig.preparer()  # the restart: recovery runs here
    assert rig.sim.state() == before
    cdi = root / "cdi"
    assert not cdi.exists() or os.listdir(cdi) == []
    assert len(preparer.checkpoint) == 0
    assert binding.read_journal(preparer.journal_dir).entries == ()


@pytest.mark.parametrize(
    "point",
    [f"write:{n}" for n in range(PREPARE_WRITES)] + [f"step:{s}" for s in PREPARE_STEPS],
)
def test_a_prepare_killed_anywhere_is_rolled_back_at_restart(tmp_path: Path, point: str) -> None:
    before = setup(tmp_path)
    child = run_child(tmp_path, "prepare", point)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert_clean(tmp_path, before)


def test_a_prepare_that_finished_keeps_its_claim(tmp_path: Path) -> None:
    setup(tmp_path)
    child = run_child(tmp_path, "prepare", f"write:{PREPARE_WRITES + 1}")
    assert child.returncode == 0, child.stderr
    answer = json.loads(child.stdout)
    assert answer["error"] == "" and len(answer["units"]) == 2


def test_a_prepare_killed_before_it_answered_answers_the_retry(tmp_path: Path) -> None:
    setup(tmp_path)
    child = run_child(tmp_path, "prepare", "step:prepared-recorded")
    assert child.returncode == -signal.SIGKILL, child.stderr
    rig = rig_for(tmp_path)
    preparer = rig.preparer()  # the restart: the claim still exists, so it stays prepared
    assert [r.claim.uid for r in preparer.prepared()] == [UID]
    assert os.listdir(tmp_path / "cdi") == [f"k8s.{DRIVER}-unit_{UID}.yaml"]
    writes = len(rig.sim.log)
    retry = preparer.prepare(ClaimRef("default", "pair-gpu", UID), Deadline(30))
    assert retry.error == "" and len(retry.units) == 2
    assert len(rig.sim.log) == writes


@pytest.mark.parametrize("step", UNPREPARE_STEPS)
def test_an_unprepare_killed_anywhere_is_finished_at_restart(tmp_path: Path, step: str) -> None:
    before = setup(tmp_path)
    rig = rig_for(tmp_path)
    result = rig.preparer().prepare(ClaimRef("default", "pair-gpu", UID), Deadline(30))
    assert result.error == ""
    child = run_child(tmp_path, "unprepare", f"step:{step}")
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert_clean(tmp_path, before)
