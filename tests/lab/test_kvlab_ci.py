"""The CI switch: a lab that cannot run skips on a developer's machine and fails in CI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kvlab.ci import (
    CI_VARIABLE,
    dra_figures,
    in_ci,
    k8s_latencies,
    lab_figures,
    lab_unavailable,
    seed_figures,
    unavailable_outcome,
)

REASON = "lab (lab kernel) cannot run here: flex is not installed (install the Debian package flex)"


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "ci"])
def test_a_set_variable_turns_the_skip_into_a_failure(value: str) -> None:
    outcome = unavailable_outcome(REASON, {CI_VARIABLE: value})
    assert outcome.action == "fail"
    assert outcome.message.startswith(REASON)
    assert CI_VARIABLE in outcome.message


@pytest.mark.parametrize("environ", [{}, {CI_VARIABLE: ""}, {CI_VARIABLE: "0"}, {"CI": "1"}])
def test_without_the_variable_the_lab_skips_with_the_reason(environ: dict[str, str]) -> None:
    assert not in_ci(environ)
    outcome = unavailable_outcome(REASON, environ)
    assert outcome.action == "skip"
    assert outcome.message == REASON


def test_lab_unavailable_fails_in_ci_and_skips_locally() -> None:
    with pytest.raises(pytest.fail.Exception, match="flex is not installed"):
        lab_unavailable(REASON, {CI_VARIABLE: "1"})
    with pytest.raises(pytest.skip.Exception, match="flex is not installed"):
        lab_unavailable(REASON, {})


def test_pytest_reports_a_failure_not_a_skip_in_ci(tmp_path: Path) -> None:
    """End to end through pytest itself: the same test is skipped, then failed."""
    lab_tools = Path(__file__).resolve().parents[2] / "tools" / "lab"
    (tmp_path / "test_unavailable.py").write_text(
        textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {str(lab_tools)!r})
            from kvlab.ci import lab_unavailable

            def test_lab():
                lab_unavailable({REASON!r}, os.environ)
            """
        )
    )

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != CI_VARIABLE} | extra
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "."],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    local = run({})
    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout
    ci = run({CI_VARIABLE: "1"})
    assert ci.returncode == 1, ci.stdout
    assert "1 failed" in ci.stdout
    assert "flex is not installed" in ci.stdout


def test_the_lab_figures_need_every_kernel() -> None:
    suites = ("debian", "lab")
    assert lab_figures({"debian": 150.0}, suites, 300.0) is None
    assert lab_figures({"debian": 150.04, "lab": 180.0}, suites, None) == {
        "debian_s": 150.0,
        "lab_s": 180.0,
    }
    assert lab_figures({"debian": 1.0, "lab": 2.0}, suites, 400.26) == {
        "debian_s": 1.0,
        "lab_s": 2.0,
        "session_s": 400.3,
    }


def test_k8s_latencies_span_the_kernels_and_skip_what_was_not_seen() -> None:
    def guest(away: object, back: object) -> dict[str, object]:
        facts = {"away": {"seen": "Unhealthy", "latency_s": away}, "back": {"seen": None}}
        if back is not None:
            facts["back"] = {"seen": "Healthy", "latency_s": back}
        return {"checks": {"k8s": {"status": "done", "facts": facts}}}

    got = k8s_latencies([guest(0.571, 0.43), guest(0.9, None), {"checks": {}}])
    assert got == {"k8s_unhealthy_s": [0.57, 0.9], "k8s_healthy_s": [0.43, 0.43]}
    assert k8s_latencies([]) == {}


def _seed_guest(**scenarios: dict[str, object]) -> dict[str, object]:
    return {"checks": {"seed_e2e": {"status": "done", "facts": {"scenarios": scenarios}}}}


def _timed(to_devices: float, qemu_start: float, functions: int) -> dict[str, object]:
    timing = {"to_devices_s": to_devices, "qemu_start_s": qemu_start}
    return {"timing": timing, "plan": {"functions": [{}] * functions}}


def test_seed_figures_are_ratios_to_the_baseline_of_the_same_boot() -> None:
    first = _seed_guest(
        baseline=_timed(100.0, 10.0, 0),
        **{"root-port": _timed(120.0, 25.0, 3), "numa": _timed(90.0, 21.0, 2)},
    )
    failed = {"timing": {"plan_s": 3.0}, "plan": {"functions": [{}]}}  # never saw devices
    second = _seed_guest(baseline=_timed(50.0, 5.0, 0), **{"root-port": _timed(60.0, 15.0, 4)})
    second["checks"]["seed_e2e"]["facts"]["scenarios"]["switch-port"] = failed  # type: ignore[index]
    assert seed_figures([first, second]) == {
        "seed_to_devices_ratio": [0.9, 1.2],
        "seed_qemu_start_ratio": [2.1, 3.0],
        "seed_functions": [2.0, 4.0],
    }


def test_seed_figures_need_a_baseline_and_a_finished_check() -> None:
    no_baseline = _seed_guest(**{"root-port": _timed(60.0, 15.0, 4)})
    broken_baseline = _seed_guest(baseline={"timing": {}}, numa=_timed(60.0, 15.0, 2))
    raised = {"checks": {"seed_e2e": {"status": "error", "error": "boom"}}}
    assert seed_figures([no_baseline, broken_baseline, raised, {"checks": {}}]) == {}


def _dra_guest(timings: dict[str, object]) -> dict[str, object]:
    return {"checks": {"dra": {"status": "done", "facts": {"timings": timings}}}}


def test_dra_figures_are_medians_of_time_and_of_the_sysfs_share() -> None:
    one = _dra_guest({
        "prepare": [0.25, 0.4, 0.35], "prepare_writes": [0.1, 0.1, 0.14],
        "unprepare": [0.2, 0.4], "unprepare_writes": [0.1, 0.3],
    })  # fmt: skip
    two = _dra_guest({"prepare": [0.5], "prepare_writes": [0.1]})
    failed = _dra_guest({"error": "busy", "prepare": [9.0], "prepare_writes": [1.0]})
    assert dra_figures([one, two, failed, {"checks": {}}]) == {
        "dra_prepare_ms": [350.0, 500.0],  # medians 0.35 s and 0.5 s
        "dra_prepare_writes_share": [0.2, 0.4],  # shares .4, .25, .4 -> .4; then .2
        "dra_unprepare_ms": [300.0, 300.0],
        "dra_unprepare_writes_share": [0.62, 0.62],  # .5 and .75
    }
