"""Sandbox and container planning benchmarks (pytest-benchmark), and the results runner.

    pytest benches/test_sandbox_bench.py --benchmark-enable      # pytest-benchmark tables
    python benches/test_sandbox_bench.py [--rounds N] [--results benches/results/sandbox.json]
                                                                  # writes SANDBOX-RESULTS.md

``--results`` adds the run's ratios to that file (``tools/figures.py`` renders them into the
README); ``--smoke`` (CI) takes two rounds: it proves the runner works, its figures mean nothing.

The machine: a fake server with 8 GPUs (L40S, each with its HD-audio function in the same
IOMMU group) and 4 ConnectX-7 NICs, every one on vfio-pci, two NUMA nodes; CDI specs for the
12 devices; a sandbox spec asking for all of them through ``cdi.k8s.io/`` annotations, and a
container spec holding the 12 group nodes containerd injected.

Measured: the host scan with details (the baseline, what every plan needs first), the sandbox
plan (annotation parsing, CDI injection, stripping, group expansion, topology, argv) and the
container plan; each as a median, with the plans as ratios to the scan of the same run and
the share of the scan in scan + sandbox plan. Without ``--benchmark-enable`` (the project
default) each test runs once, as a smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kata"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared_paths
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_results

from sandbox_hosts import FakeServer, cdi_registry, gpu_server

import kata_vfio._core as core
from bench_results import record_run
from kata_vfio.cdi import Registry
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.container import plan_container
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox

GPUS, NICS = 8, 4
CONFIG = KataConfig(
    path="/usr/bin/qemu-system-x86_64",
    kernel="/opt/kata/vmlinuz",
    image="/opt/kata/kata.img",
    default_memory=16384,
    cold_plug_vfio="root-port",
    pcie_root_port=16,
).validate()


@dataclass(frozen=True)
class Setup:
    """Everything a measurement needs, built once."""

    server: FakeServer
    registry: Registry
    sandbox_spec: dict[str, Any]
    container_spec: dict[str, Any]


def build(root: Path) -> Setup:
    """Writes the fake server and its CDI specs under ``root``."""
    server = gpu_server(root / "host", gpus=GPUS, audio=True, nics=NICS)
    gpus = [
        str(d.bdf) for d in server.host.devices if d.vendor == 0x10DE and d.class_code >> 16 == 3
    ]
    nics = [str(d.bdf) for d in server.host.devices if d.vendor == 0x15B3]
    cdi_registry(server, root / "cdi", gpus, kind="nvidia.com/pgpu")
    registry = cdi_registry(server, root / "cdi", nics, kind="nvidia.com/nic")
    names = [f"nvidia.com/pgpu={i}" for i in range(GPUS)] + [
        f"nvidia.com/nic={i}" for i in range(NICS)
    ]
    sandbox_spec = {
        "ociVersion": "1.1.0",
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "0123456789abcdef",
            "cdi.k8s.io/vfio": ",".join(names),
        },
    }
    container_spec = registry.inject(
        {
            "ociVersion": "1.1.0",
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "cdi.k8s.io/vfio": ",".join(names),
            },
        },
        names,
    ).spec
    return Setup(server, registry, sandbox_spec, container_spec)


def scan(setup: Setup) -> core.Host:
    """The baseline: one host scan with details."""
    server = setup.server
    return core.scan(server.sysfs_root, server.dev_root, server.proc_root, details=True)


def sandbox(setup: Setup, host: core.Host) -> SandboxPlan:
    """The sandbox-create plan for all 12 devices."""
    return plan_sandbox(setup.sandbox_spec, host=host, config=CONFIG, registry=setup.registry)


def check(plan: SandboxPlan) -> None:
    """What a benchmark run must have produced."""
    assert len(plan.devices) == GPUS + NICS
    assert sum(len(d.functions) for d in plan.devices) == 2 * GPUS + NICS
    assert len(plan.topology.ports) == 16
    assert plan.annotations_removed == ("cdi.k8s.io/vfio",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return build(tmp_path_factory.mktemp("sandbox-bench"))


def test_host_scan_baseline(benchmark: Any, setup: Setup) -> None:
    host = benchmark.pedantic(scan, args=(setup,), rounds=10, iterations=1)
    assert len([d for d in host.devices if d.is_vfio_bound]) == 2 * GPUS + NICS


def test_sandbox_plan(benchmark: Any, setup: Setup) -> None:
    host = scan(setup)
    setup.registry.refresh()
    plan = benchmark.pedantic(sandbox, args=(setup, host), rounds=10, iterations=1)
    check(plan)


def test_container_plan(benchmark: Any, setup: Setup) -> None:
    plan = sandbox(setup, scan(setup))
    result = benchmark.pedantic(
        plan_container, args=(setup.container_spec, plan), rounds=10, iterations=1
    )
    assert len(result.agent_devices) == GPUS + NICS
    assert len(result.annotations_added) == GPUS + NICS


def _median(function: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Measures in one process and writes SANDBOX-RESULTS.md."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--output", default=str(Path(__file__).with_name("SANDBOX-RESULTS.md")))
    parser.add_argument("--results", help="add the run's ratios to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="CI: two rounds")
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 2
    with tempfile.TemporaryDirectory() as directory:
        setup = build(Path(directory))
        host = scan(setup)
        setup.registry.refresh()
        plan = sandbox(setup, host)
        check(plan)
        scan_s = _median(lambda: scan(setup), args.rounds)
        sandbox_s = _median(lambda: sandbox(setup, host), args.rounds)
        container_s = _median(lambda: plan_container(setup.container_spec, plan), args.rounds)
    share = scan_s / (scan_s + sandbox_s)
    rows = [
        ("host scan, details (baseline)", scan_s, 1.0),
        ("sandbox plan (12 devices, 20 functions)", sandbox_s, sandbox_s / scan_s),
        ("container plan (12 nodes)", container_s, container_s / scan_s),
    ]
    lines = [
        "# Sandbox and container planning",
        "",
        f"Generated by `python benches/test_sandbox_bench.py --rounds {args.rounds}` on "
        f"{datetime.date.today().isoformat()}, Python {platform.python_version()}, "
        f"{platform.machine()}; medians of {args.rounds} runs in one process.",
        "",
        f"Machine: {GPUS} GPUs (L40S, each with its audio function in one IOMMU group) and {NICS} "
        "ConnectX-7 NICs on vfio-pci, fake sysfs; 12 CDI devices requested by annotation, "
        "16 root ports.",
        "",
        "| step | median | ratio to the host scan |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {seconds * 1e3:.2f} ms | {ratio:.2f} |" for name, seconds, ratio in rows],
        "",
        f"Share of the host scan in scan + sandbox plan: {share:.0%} (planning {1 - share:.0%}).",
        "",
        "Absolute times depend on the machine (and here on a shared, busy one); the ratios "
        "compare medians taken one after the other in the same process.",
        "",
    ]
    Path(args.output).write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines))
    if args.results:
        figures = {
            "sandbox_over_scan": sandbox_s / scan_s,
            "container_over_scan": container_s / scan_s,
        }
        record_run(Path(args.results), "sandbox", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
