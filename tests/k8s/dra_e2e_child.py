"""``kata-vfio k8s dra-plugin`` as a real process on a fake host, talking to a real (fake)
API server through ``--kubeconfig``: the only thing replaced is the kernel, which a fake sysfs
tree does not have, so each HostAccess the command builds writes through the kernel simulator
(with the driver ID tables the parent saved, so a restart still knows e1000e's). Run by
test_dra_e2e.py as

    python dra_e2e_child.py ROOT -- <kata-vfio arguments>
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import kata_vfio.k8s.dra.prepare
from kata_vfio.cli import main
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim

TABLES_FILE = "id_tables.json"


def simulated_access(root: Path) -> Any:
    """A stand-in for HostAccess that fills in the simulator."""
    host = FakeHost.at(root / "host")
    tables = json.loads((root / TABLES_FILE).read_text())
    sim = KernelSim.for_host(
        host, id_tables={driver: [tuple(pair) for pair in ids] for driver, ids in tables.items()}
    )
    modules = root / "host" / "modules"
    modules.mkdir(exist_ok=True)
    real = kata_vfio.k8s.dra.prepare.HostAccess

    def access(**fields: Any) -> Any:
        return dataclasses.replace(
            real(**fields),
            modules_root=str(modules),
            kernel_release="6.12.0-test",
            sysfs_writer=sim.write,
            module_loader=sim.load_module,
        )

    return access


if __name__ == "__main__":
    kata_vfio.k8s.dra.prepare.HostAccess = simulated_access(Path(sys.argv[1]))  # type: ignore[misc]
    sys.exit(main(sys.argv[3:]))
