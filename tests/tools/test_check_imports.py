"""tools/check_imports.py: each layering rule catches what it is for, on a small fake
checkout, and the real checkout has no violation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKER = REPO / "tools" / "check_imports.py"

# A minimal package with every room the rules below touch.
BASE_FILES = {
    "python/kata_vfio/__init__.py": "from kata_vfio._core import scan\n__all__ = ['scan']\n",
    "python/kata_vfio/_core.pyi": "def scan() -> None: ...\n",
    "python/kata_vfio/errors.py": "",
    "python/kata_vfio/vm/__init__.py": "",
    "python/kata_vfio/vm/topology.py": "__all__ = ['plan_topology']\ndef plan_topology(): ...\n",
    "python/kata_vfio/kata/__init__.py": "",
    "python/kata_vfio/kata/sandbox.py": "__all__ = ['plan_sandbox']\n_SECRET = 1\n",
    "python/kata_vfio/qemu/__init__.py": "",
    "python/kata_vfio/cdi/__init__.py": "",
    "python/kata_vfio/cdi/names.py": "",
    "python/kata_vfio/cdi/validate.py": "",
    "python/kata_vfio/testing/__init__.py": "",
    "python/kata_vfio/cli/__init__.py": "",
    "python/kata_vfio/cli/_common.py": "",
    "python/kata_vfio/cli/host.py": "",
    "tests/oracles/__init__.py": "",
    "tests/shared_paths.py": "",
    "tests/kata/sandbox_hosts.py": "",
    "tools/lab/kvlab/__init__.py": "",
    "python/kata_vfio/k8s/__init__.py": "",
    "python/kata_vfio/k8s/inventory.py": "",
    "python/kata_vfio/k8s/deviceplugin.py": "",
    "python/kata_vfio/k8s/dra/__init__.py": "",
    "python/kata_vfio/k8s/dra/ports.py": "",
}


def run(tmp_path: Path, extra: dict[str, str]) -> tuple[int, list[str]]:
    for name, text in {**BASE_FILES, **extra}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    done = subprocess.run(
        [sys.executable, str(CHECKER), str(tmp_path)], capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout.splitlines()


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    code, lines = run(
        tmp_path,
        {
            "python/kata_vfio/qemu/vm.py": "from kata_vfio.vm.topology import plan_topology\n",
            "python/kata_vfio/cli/bind.py": "from kata_vfio.cli import _common\nimport kata_vfio\n",
            "python/kata_vfio/_json.py": "from kata_vfio.errors import CdiError\n",
            "python/kata_vfio/kata/config.py": "from kata_vfio._json import load\n",
            "python/kata_vfio/k8s/dra/prepare.py": "from kata_vfio.k8s.inventory import Unit\n"
            "from kata_vfio.k8s.dra.ports import ClaimRef\n",
            "python/kata_vfio/k8s/dra/slices.py": "import kubernetes.client\n",
        },
    )
    assert (code, lines) == (0, [])


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (
            "python/kata_vfio/qemu/qmp.py",
            "from kata_vfio.kata.sandbox import plan_sandbox\n",
            "kata_vfio.qemu.qmp (qemu) imports kata_vfio.kata.sandbox (kata): layer not allowed",
        ),
        (
            "python/kata_vfio/vm/plan.py",
            "def f():\n    import kata_vfio.qemu\n",  # function-local imports count too
            "kata_vfio.vm.plan (vm) imports kata_vfio.qemu (qemu): layer not allowed",
        ),
        (
            "python/kata_vfio/cli/sandbox.py",
            "from kata_vfio._core import scan\n",
            "kata_vfio.cli.sandbox (cli) imports kata_vfio._core (_core): layer not allowed",
        ),
        (
            "python/kata_vfio/cli/qemu.py",
            "from kata_vfio.testing import build_host\n",
            "kata_vfio.cli.qemu (cli) imports kata_vfio.testing (testing): layer not allowed",
        ),
        (
            "python/kata_vfio/cli/qemu.py",
            "from kata_vfio.kata.sandbox import _SECRET\n",
            "kata_vfio.cli.qemu imports the private kata_vfio.kata.sandbox._SECRET from "
            "outside kata_vfio.kata.sandbox",
        ),
        (
            "python/kata_vfio/kata/run.py",
            "from kata_vfio.vm.topology import Port\n",
            "kata_vfio.kata.run imports Port from kata_vfio.vm.topology, which is not in its "
            "__all__",
        ),
        (
            "python/kata_vfio/cli/qemu.py",
            "from kata_vfio.cli import host\n",
            "kata_vfio.cli.qemu imports another CLI command module, kata_vfio.cli.host",
        ),
        (
            "python/kata_vfio/cdi/model.py",
            "from kata_vfio.cdi.validate import validate_spec\n",
            "kata_vfio.cdi.model must stay a leaf but imports kata_vfio.cdi.validate",
        ),
        (
            "python/kata_vfio/kata/helpers.py",
            "from oracles import refscan\n",
            "imports oracles from the test tree",
        ),
        (
            "python/kata_vfio/vm/x.py",
            "import sandbox_hosts\n",
            "imports sandbox_hosts from the test tree",
        ),
        (
            "tools/lab/kvlab/cli.py",
            "from shared_paths import SNAPSHOTS\n",
            "imports shared_paths from the test tree",
        ),
        (
            "python/kata_vfio/testing/strategies.py",
            "from hypothesis import strategies\n",
            "imports the test-only hypothesis",
        ),
        (
            "python/kata_vfio/gadgets.py",
            "import os\n",
            "kata_vfio.gadgets is in a room the layering does not know (gadgets): add it to "
            "ALLOWED in tools/check_imports.py and to ARCHITECTURE.md",
        ),
        (
            "python/kata_vfio/k8s/dra/service.py",
            "from kata_vfio.k8s.deviceplugin import DevicePluginService\n",
            "kata_vfio.k8s.dra.service imports kata_vfio.k8s.deviceplugin: k8s.dra takes only "
            "cdispec, grpcapi, inventory, resources, unixgrpc, watch from k8s",
        ),
        (
            "python/kata_vfio/k8s/agent.py",
            "from kata_vfio.k8s.dra import ports\n",
            "kata_vfio.k8s.agent imports kata_vfio.k8s.dra.ports: the rest of k8s never imports "
            "the DRA plugin",
        ),
        (
            "python/kata_vfio/k8s/dra/prepare.py",
            "from kubernetes.client import ResourceV1Api\n",
            "kata_vfio.k8s.dra.prepare imports the kubernetes client: only "
            "kata_vfio.k8s.dra.apiclient, kata_vfio.k8s.dra.claims, kata_vfio.k8s.dra.slices "
            "talk to the API server",
        ),
    ],
)
def test_each_rule_reports_the_import_that_breaks_it(
    tmp_path: Path, path: str, source: str, expected: str
) -> None:
    code, lines = run(tmp_path, {path: source})
    assert code == 1
    assert lines == [f"{path}:{source.count(chr(10)) if 'def f' in source else 1}: {expected}"]


def test_bad_usage_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(CHECKER), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "has no python/kata_vfio" in done.stderr


def test_the_checkout_follows_its_layering() -> None:
    done = subprocess.run(
        [sys.executable, str(CHECKER)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, "")
