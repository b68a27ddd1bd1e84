"""A process that prepares (or unprepares) one claim on a fake DRA host and kills itself with
SIGKILL at a chosen point: after a named step of the Preparer, or just before the n-th sysfs
write of the simulated kernel. Run by test_dra_crash.py:

    python dra_crash_child.py ROOT prepare|unprepare step:NAME|write:N
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from dra_fakes import DraRig, MemoryClaims

from kata_vfio.k8s.dra.ports import ClaimRef
from kata_vfio.k8s.dra.prepare import Deadline
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim

CLAIM_FILE = "claim.json"
TABLES_FILE = "id_tables.json"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def rig_for(root: Path) -> DraRig:
    """The rig of ``root`` as the parent built it (host, kernel tables, claim)."""
    host = FakeHost.at(root / "host")
    tables = json.loads((root / TABLES_FILE).read_text())
    sim = KernelSim.for_host(
        host, id_tables={driver: [tuple(pair) for pair in ids] for driver, ids in tables.items()}
    )
    claims = MemoryClaims()
    claim = json.loads((root / CLAIM_FILE).read_text())
    claims.add(claim["uid"], *claim["bdfs"], name=claim["name"])
    return DraRig(host, sim, claims, root / "state", root / "cdi")


def main(root: str, verb: str, point: str) -> int:
    rig = rig_for(Path(root))
    kind, _, where = point.partition(":")
    if kind == "write":
        limit = int(where)
        real = rig.sim.write

        def counting(path: str, data: bytes) -> None:
            if len(rig.sim.log) >= limit:
                _die()
            real(path, data)

        rig.sim.write = counting  # type: ignore[method-assign]

    def hook(step: str) -> None:
        if kind == "step" and step == where:
            _die()

    preparer = rig.preparer(hook=hook)
    ((uid, (namespace, name, _)),) = rig.claims.claims.items()
    claim = ClaimRef(namespace, name, uid)
    result = (preparer.prepare if verb == "prepare" else preparer.unprepare)(claim, Deadline(30))
    print(json.dumps({"error": result.error, "units": [u.cdi_id for u in result.units]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
