"""``kata-vfio k8s dra-plugin`` as a real process, with the API-server side replaced by the
in-memory test doubles (the claim of ``claim.json``): run by test_dra_cli.py as

    python dra_cli_child.py ROOT -- <kata-vfio arguments>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dra_fakes import MemoryClaims, MemorySlices

import kata_vfio.cli.k8s
from kata_vfio.cli import main


def ports(root: Path) -> Any:
    def api_ports(kubeconfig: str | None, driver: str, node: str) -> tuple[Any, Any]:
        del kubeconfig, driver, node
        claims = MemoryClaims()
        for claim in json.loads((root / "claims.json").read_text()):
            claims.add(claim["uid"], *claim["bdfs"], name=claim["name"])
        return claims, MemorySlices()

    return api_ports


if __name__ == "__main__":
    kata_vfio.cli.k8s._api_ports = ports(Path(sys.argv[1]))  # type: ignore[attr-defined]
    sys.exit(main(sys.argv[3:]))
