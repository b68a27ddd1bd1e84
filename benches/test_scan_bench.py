"""pytest-benchmark suites for the host scan: the Rust core, the pure-Python reference scanner,
a naive Python scan and lspci, on generated hosts of 100, 1,000 and 10,000 functions. Compare
within one run (``pytest benches --benchmark-enable --benchmark-group-by=param:count``);
``benches/run_scan_bench.py`` prints the same comparison as ratios to the floor."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import kata_vfio
from kata_vfio.testing import FakeHost
from naive_scan import naive_scan
from oracles import refscan
from trees import bench_host

COUNTS = [100, 1000, 10_000]


@pytest.fixture(scope="module", params=COUNTS, ids=lambda n: f"{n}")
def host(request: pytest.FixtureRequest) -> FakeHost:
    return bench_host(request.param)


def _count(host: FakeHost) -> int:
    return int(Path(host.root).name.split("-")[0][1:])


def test_rust_core(benchmark, host):
    def scan() -> int:
        result = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
        return len(result.devices) + len(result.groups)

    assert benchmark(scan) > _count(host)


def test_reference_python(benchmark, host):
    result = benchmark(refscan.scan, host.sysfs_root, host.dev_root, host.proc_root)
    assert len(result.devices) == _count(host)


def test_naive_python(benchmark, host):
    result = benchmark(naive_scan, host.sysfs_root)
    assert len(result["devices"]) == _count(host)


@pytest.mark.skipif(shutil.which("lspci") is None, reason="lspci (pciutils) is not installed")
def test_lspci(benchmark, host):
    argv = ["lspci", "-nnk", "-O", f"sysfs.path={host.sysfs_root}/bus/pci"]

    def run() -> int:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return sum(1 for line in out.splitlines() if line and not line[0].isspace())

    assert benchmark(run) == _count(host)
