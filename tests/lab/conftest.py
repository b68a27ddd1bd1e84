"""Fixtures of the real-kernel lab: one boot per kernel runs every guest check.

The kernels and images come from tools/lab (kvlab), cached outside the repository. When QEMU,
the Debian kernel package or the build tools cannot be had, the lab tests are skipped with a
message naming what is missing (in CI, with KATA_VFIO_CI set, they fail instead: see
kvlab.ci); a lab that was available but failed is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GUEST = Path(__file__).resolve().parent / "guest"
sys.path.insert(0, str(REPO / "tools" / "lab"))
sys.path.insert(0, str(REPO / "benches"))  # bench_results: the wall times as a results file

from kvlab import initramfs, kernels, proc, vm  # noqa: E402 (needs the path above)
from kvlab.ci import (  # noqa: E402
    dra_figures,
    k8s_latencies,
    lab_figures,
    lab_unavailable,
    seed_figures,
)
from kvlab.errors import LabError, LabUnavailableError  # noqa: E402

from bench_results import record_run  # noqa: E402

# The two lab kernels: Debian's own (legacy VFIO only) and the built one (iommufd + cdev).
SUITES = ("debian", "lab")
# Generous: a nested QEMU (TCG inside TCG) takes minutes on a busy 2-core machine.
BOOT_TIMEOUT_S = 1800.0
_WALL_TIMES: dict[str, tuple[float, float | None]] = {}
# Set to a results file (benches/results/lab.json) to add this run's wall times to it; then
# python tools/figures.py renders them into the README.
RESULTS_VARIABLE = "KATA_VFIO_LAB_RESULTS"
_LOADED_AT = time.monotonic()  # about when pytest started collecting the lab


@dataclasses.dataclass(frozen=True)
class LabRun:
    """One finished boot: the guest's facts per check, and the boot's evidence."""

    suite: str
    release: str
    results: dict[str, Any]
    boot: vm.BootResult
    nested_modes: tuple[str, ...]

    def facts(self, check: str) -> dict[str, Any]:
        """The facts ``check`` recorded; fails with the guest's evidence otherwise."""
        entry = self.results.get("checks", {}).get(check)
        if entry is None:
            pytest.fail(f"the {self.suite} lab guest did not run check {check!r}\n{self.context()}")
        if entry["status"] != "done":
            pytest.fail(f"lab check {check!r} raised in the {self.suite} guest:\n{entry['error']}")
        facts: dict[str, Any] = entry["facts"]
        return facts

    def context(self) -> str:
        """The boot's status and console tail, for failure messages."""
        return self.boot.describe()


# What the nested QEMU passes through on each kernel: the legacy group path on Debian's (it
# has nothing else), the fd-passed cdev + iommufd path on the lab kernel.
NESTED_MODES = {"debian": ["legacy"], "lab": ["cdev"]}


def _inner_kernel() -> kernels.Kernel:
    """The nested guest's kernel: the small lab kernel when it can be had (TCG inside TCG
    boots it several times faster than Debian's, and its e1000e is built in), else Debian's."""
    try:
        return kernels.lab_kernel()
    except LabError:  # unavailable here, or its build broke (the lab suite reports that)
        return kernels.debian_kernel()


def _boot(suite: str, out: Path) -> LabRun:
    try:
        proc.require_tool("qemu-system-x86_64")
        kernel = kernels.debian_kernel() if suite == "debian" else kernels.lab_kernel()
        inner_kernel = _inner_kernel()
    except LabUnavailableError as exc:
        _UNAVAILABLE[suite] = f"lab ({suite} kernel) cannot run here: {exc}"
        lab_unavailable(_UNAVAILABLE[suite], os.environ)
    context = {
        "suite": suite,
        "inner_kernel": str(inner_kernel.image),
        "inner_initrd": str(initramfs.inner_image(inner_kernel)),
        "seed_initrd": str(initramfs.seed_image(inner_kernel)),
        "nested_modes": NESTED_MODES[suite],
    }
    (out / "context.json").write_text(json.dumps(context, indent=1))
    initrd = initramfs.guest_image(kernel)
    config = vm.VmConfig(kernel=kernel, initrd=initrd, out_dir=out, timeout_s=BOOT_TIMEOUT_S)
    argv = [sys.executable, str(GUEST / "run_checks.py"), "--suite", suite, "--out", str(out)]
    # KVLAB_ONLY=seed_e2e,... runs just those guest checks (by hand, with -k; CI runs all).
    for name in filter(None, os.environ.get("KVLAB_ONLY", "").split(",")):
        argv += ["--only", name]
    try:
        boot = vm.boot(config, argv, cwd=REPO)
        died_at_boot = boot.command_started_s is None and not boot.timed_out
        first_tail = boot.console.splitlines()[-12:]
    except LabError as exc:  # QEMU exited with an error before the guest said anything
        died_at_boot, first_tail = True, str(exc).splitlines()[-12:]
    if died_at_boot:
        # The guest died before it ran anything (under TCG an oops at boot was seen once: an
        # int3 left by live code patching). Nothing was checked: boot once more, and say so
        # in the summary with the first console's tail.
        _BOOT_RETRIES[suite] = first_tail
        boot = vm.boot(config, argv, cwd=REPO)
    _WALL_TIMES[suite] = (boot.wall_s, boot.command_started_s)
    results_file = out / "results.json"
    if not results_file.is_file():
        pytest.fail(f"the {suite} lab guest wrote no results\n{boot.describe()}")
    results = json.loads(results_file.read_text())
    _SEED_TIMES[suite] = _seed_times(results)
    return LabRun(
        suite=suite,
        release=kernel.release,
        results=results,
        boot=boot,
        nested_modes=tuple(NESTED_MODES[suite]),
    )


def _seed_times(results: dict[str, Any]) -> list[str]:
    """The seed e2e check's time from plan to devices per scenario, for the summary."""
    entry = results.get("checks", {}).get("seed_e2e", {})
    scenarios = entry.get("facts", {}).get("scenarios", {}) if entry.get("status") == "done" else {}
    base = scenarios.get("baseline", {}).get("timing", {}).get("to_devices_s")
    lines = []
    for name, scenario in scenarios.items():
        t = scenario.get("timing", {})
        if "to_devices_s" not in t:
            continue
        ratio = f", {t['to_devices_s'] / base:.2f} x baseline" if base else ""
        if "boot_retry" in scenario:
            ratio += "; L2's kernel panicked at the first boot, booted again"
        lines.append(
            f"{name} {t['to_devices_s']:.1f} s (plan {t['plan_s']:.1f}, QEMU start "
            f"{t['qemu_start_s']:.1f}, guest boot {t['guest_boot_s']:.1f}{ratio})"
        )
    return lines


_RUNS: dict[str, LabRun] = {}
_SEED_TIMES: dict[str, list[str]] = {}
_BOOT_RETRIES: dict[str, list[str]] = {}
_UNAVAILABLE: dict[str, str] = {}


@pytest.fixture(scope="session", params=SUITES)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    """The finished boot of one lab kernel."""
    suite: str = request.param
    if suite in _UNAVAILABLE:
        lab_unavailable(_UNAVAILABLE[suite], os.environ)
    if suite not in _RUNS:
        _RUNS[suite] = _boot(suite, tmp_path_factory.mktemp(f"lab-{suite}"))
    return _RUNS[suite]


def _lab_only(config: pytest.Config) -> bool:
    """Whether this session ran the lab alone (its wall time is then `pytest tests/lab`)."""
    here = Path(__file__).resolve().parent
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return bool(paths) and all(path == here or here in path.parents for path in paths)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Report each lab boot's wall time, as the README promises CI does; with
    KATA_VFIO_LAB_RESULTS set, add them to that results file."""
    for suite, (wall, started) in sorted(_WALL_TIMES.items()):
        when = "?" if started is None else f"{started:.1f}"
        terminalreporter.write_line(
            f"lab: {suite} kernel: boot + checks {wall:.1f} s wall "
            f"(checks started at {when} s of guest uptime)"
        )
    target = os.environ.get(RESULTS_VARIABLE)
    session_s = time.monotonic() - _LOADED_AT if _lab_only(config) else None
    figures = lab_figures(
        {suite: wall for suite, (wall, _) in _WALL_TIMES.items()}, SUITES, session_s
    )
    if figures is not None:
        figures.update(k8s_latencies([run.results for run in _RUNS.values()]))
        figures.update(seed_figures([run.results for run in _RUNS.values()]))
        figures.update(dra_figures([run.results for run in _RUNS.values()]))
    if target and figures is not None:
        record_run(Path(target), "lab", figures)
        terminalreporter.write_line(f"lab: wall times added to {target} (tools/figures.py)")
    for suite, tail in sorted(_BOOT_RETRIES.items()):
        terminalreporter.write_line(
            f"lab: {suite} kernel: the first boot died before its checks started; booted again"
        )
        for line in tail:
            terminalreporter.write_line(f"lab: {suite} kernel: first boot: {line}")
    for suite, lines in sorted(_SEED_TIMES.items()):
        for line in lines:
            terminalreporter.write_line(f"lab: {suite} kernel: seed e2e, plan to devices: {line}")
