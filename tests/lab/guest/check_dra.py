"""The DRA plugin's prepare and unprepare against the real kernel, on the two-function e1000e
group (``topology.NIC_MULTI``).

The Preparer runs on the real /sys with an in-memory claim (the API server is not part of the
lab): prepare binds both functions to vfio-pci and writes the claim's CDI spec, whose nodes
must exist and open (``kata-vfio check --open``); unprepare gives e1000e back. Then a prepare
in a child process is killed with SIGKILL after binding, and a restart (recovery) must give
e1000e back and leave no spec. Timings: five prepare/unprepare cycles, split between the time
inside sysfs writes (the kernel's unbind and probe) and the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from guestlib import cli_check_open
from kvlab import topology

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "k8s"))

from dra_fakes import DRIVER, NODE, MemoryClaims  # noqa: E402

from kata_vfio import HostPaths  # noqa: E402
from kata_vfio.k8s.dra.checkpoint import read_boot_id  # noqa: E402
from kata_vfio.k8s.dra.claimspec import ClaimSpecs  # noqa: E402
from kata_vfio.k8s.dra.prepare import Deadline, HostAccess, Preparer  # noqa: E402
from kata_vfio.k8s.resources import parse_resources  # noqa: E402

PAIR = topology.NIC_MULTI
RESOURCE = "lab.kata-vfio.io/nic=8086:10d3"
UID = "1ab0c0de-0000-4000-8000-00000000d7a0"
CYCLES = 5

# The child that is killed: the same Preparer, SIGKILL right after the group is bound.
_CHILD = """
import os, signal, sys
sys.path.insert(0, sys.argv[3])
from dra_fakes import DRIVER, NODE, MemoryClaims
from kata_vfio import HostPaths
from kata_vfio.k8s.dra.checkpoint import read_boot_id
from kata_vfio.k8s.dra.claimspec import ClaimSpecs
from kata_vfio.k8s.dra.prepare import Deadline, HostAccess, Preparer
from kata_vfio.k8s.resources import parse_resources
claims = MemoryClaims()
claim = claims.add(sys.argv[4], sys.argv[5])
def hook(step):
    if step.startswith("bound "):
        os.kill(os.getpid(), signal.SIGKILL)
preparer = Preparer(driver=DRIVER, pool=NODE,
    access=HostAccess(paths=HostPaths(), resources=parse_resources([sys.argv[6]])),
    state_dir=sys.argv[1], boot_id=read_boot_id("/proc"),
    specs=ClaimSpecs(sys.argv[2], DRIVER), claims=claims, hook=hook)
preparer.recover()
preparer.prepare(claim, Deadline(30))
"""


class _TimedWriter:
    """The real sysfs write, timed (what the kernel spends in unbind and probe)."""

    def __init__(self) -> None:
        self.inside = 0.0

    def __call__(self, path: str, data: bytes) -> None:
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
            self.inside += time.perf_counter() - started


def _driver(bdf: str) -> str | None:
    link = f"/sys/bus/pci/devices/{bdf}/driver"
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _preparer(state: str, cdi: str, claims: MemoryClaims, writer: Any = None) -> Preparer:
    preparer = Preparer(
        driver=DRIVER,
        pool=NODE,
        access=HostAccess(
            paths=HostPaths(), resources=parse_resources([RESOURCE]), sysfs_writer=writer
        ),
        state_dir=state,
        boot_id=read_boot_id("/proc"),
        specs=ClaimSpecs(cdi, DRIVER),
        claims=claims,
    )
    preparer.recover()
    return preparer


def _prepare_and_unprepare(state: str, cdi: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    claims = MemoryClaims()
    claim = claims.add(UID, PAIR[0])
    preparer = _preparer(state, cdi, claims)
    result = preparer.prepare(claim, Deadline(30))
    facts["prepare_error"] = result.error
    facts["cdi_ids"] = [u.cdi_id for u in result.units]
    facts["drivers_prepared"] = {b: _driver(b) for b in PAIR}
    spec_path = os.path.join(cdi, f"k8s.{DRIVER}-unit_{UID}.yaml")
    spec = yaml.safe_load(Path(spec_path).read_text()) if os.path.exists(spec_path) else {}
    nodes = [n["path"] for d in spec.get("devices", []) for n in d["containerEdits"]["deviceNodes"]]
    facts["spec_nodes"] = nodes
    facts["spec_control"] = spec.get("containerEdits", {}).get("deviceNodes", [])
    facts["nodes_exist"] = {n: os.path.exists(n) for n in nodes}
    facts["check_open"] = {b: cli_check_open(b) for b in PAIR}
    facts["repeat_same"] = preparer.prepare(claim, Deadline(30)) == result
    facts["unprepare_error"] = preparer.unprepare(claim, Deadline(30)).error
    facts["drivers_unprepared"] = {b: _driver(b) for b in PAIR}
    facts["spec_left"] = sorted(os.listdir(cdi)) if os.path.isdir(cdi) else []
    return facts


def _killed_mid_prepare(state: str, cdi: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, state, cdi, str(REPO / "tests" / "k8s"), UID, PAIR[0],
         RESOURCE],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    facts["child_rc"] = child.returncode
    facts["child_killed"] = child.returncode == -signal.SIGKILL
    facts["child_stderr"] = child.stderr[-2000:]
    facts["drivers_after_kill"] = {b: _driver(b) for b in PAIR}
    claims = MemoryClaims()
    claims.add(UID, PAIR[0])
    preparer = _preparer(state, cdi, claims)  # the restart
    facts["drivers_after_restart"] = {b: _driver(b) for b in PAIR}
    facts["records_after_restart"] = len(preparer.checkpoint)
    facts["spec_after_restart"] = sorted(os.listdir(cdi)) if os.path.isdir(cdi) else []
    return facts


def _timings(state: str, cdi: str) -> dict[str, Any]:
    writer = _TimedWriter()
    claims = MemoryClaims()
    preparer = _preparer(state, cdi, claims, writer)
    rows: dict[str, list[float]] = {"prepare": [], "prepare_writes": [], "unprepare": [],
                                    "unprepare_writes": []}  # fmt: skip
    for index in range(CYCLES):
        claim = claims.add(f"{UID[:-2]}{index:02d}", PAIR[0])
        writer.inside = 0.0
        started = time.perf_counter()
        error = preparer.prepare(claim, Deadline(30)).error
        rows["prepare"].append(time.perf_counter() - started)
        rows["prepare_writes"].append(writer.inside)
        writer.inside = 0.0
        started = time.perf_counter()
        error = error or preparer.unprepare(claim, Deadline(30)).error
        rows["unprepare"].append(time.perf_counter() - started)
        rows["unprepare_writes"].append(writer.inside)
        if error:
            return {"error": error, **rows}
    return rows


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Prepare/unprepare, SIGKILL mid-prepare and restart, then timings; devices as found."""
    del context
    facts: dict[str, Any] = {"drivers_before": {b: _driver(b) for b in PAIR}}
    with tempfile.TemporaryDirectory(prefix="kvlab-dra-") as tmp:
        for name, step in (
            ("prepare", _prepare_and_unprepare),
            ("killed", _killed_mid_prepare),
            ("timings", _timings),
        ):
            state = os.path.join(tmp, name, "state")
            cdi = os.path.join(tmp, name, "cdi")
            try:
                facts[name] = step(state, cdi)
            except Exception as exc:  # a fact, not a crash: the next step still runs
                facts[name] = {"exception": repr(exc)}
    facts["drivers_after"] = {b: _driver(b) for b in PAIR}
    facts["json_ok"] = bool(json.dumps(facts, default=str))
    return facts
