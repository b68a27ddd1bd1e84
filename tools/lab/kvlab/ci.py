"""Whether a lab that cannot run here is skipped (a developer's machine) or fails (CI).

On a developer's machine a missing QEMU or kernel package is no reason to fail the suite: the
lab tests skip with what is missing. In CI the lab is what proves binding and passthrough on a
real kernel, so a lab that could not be prepared must fail the run, never pass it silently.
`.ci/run` exports ``KATA_VFIO_CI=1`` for that.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NoReturn

CI_VARIABLE = "KATA_VFIO_CI"
# Values that leave the switch off (an exported but empty or explicitly false variable).
_OFF = ("", "0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What to do with a lab that cannot run: ``skip`` or ``fail``, and the message."""

    action: Literal["skip", "fail"]
    message: str


def in_ci(environ: Mapping[str, str]) -> bool:
    """True when ``environ`` says this is a CI run (``KATA_VFIO_CI`` set and not off)."""
    return environ.get(CI_VARIABLE, "").strip().lower() not in _OFF


def unavailable_outcome(reason: str, environ: Mapping[str, str]) -> Outcome:
    """Skip with ``reason`` locally; fail with it, saying why, in CI."""
    if in_ci(environ):
        return Outcome(
            "fail",
            f"{reason} [{CI_VARIABLE} is set: in CI the lab must run; install what is named "
            "or fix tools/lab/lab prepare]",
        )
    return Outcome("skip", reason)


def lab_unavailable(reason: str, environ: Mapping[str, str]) -> NoReturn:
    """Ends the current test: ``pytest.skip`` locally, ``pytest.fail`` in CI."""
    # Imported here: only the test side calls this; the lab tool never imports pytest.
    import pytest  # noqa: PLC0415

    outcome = unavailable_outcome(reason, environ)
    if outcome.action == "fail":
        pytest.fail(outcome.message, pytrace=False)
    pytest.skip(outcome.message)


def lab_figures(
    wall_times: Mapping[str, float], suites: tuple[str, ...], session_s: float | None
) -> dict[str, float] | None:
    """A lab run's figures for its results file (benches/results/lab.json, rendered into the
    README by tools/figures.py): each kernel's boot + checks in seconds, and the whole session
    when it ran the lab alone; None unless every kernel booted (a partial run proves less)."""
    if set(wall_times) != set(suites):
        return None
    figures = {f"{suite}_s": round(wall_times[suite], 1) for suite in suites}
    if session_s is not None:
        figures["session_s"] = round(session_s, 1)
    return figures


def k8s_latencies(results: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """From each kernel's guest results, the device-plugin check's time from the first sysfs
    write to the health change seen in ListAndWatch (driver away from vfio: Unhealthy; back:
    Healthy), as ``[low, high]`` over the kernels; a check that saw nothing gives nothing."""
    seen: dict[str, list[float]] = {"k8s_unhealthy_s": [], "k8s_healthy_s": []}
    for result in results:
        facts = (result.get("checks", {}).get("k8s") or {}).get("facts") or {}
        for key, name in (("away", "k8s_unhealthy_s"), ("back", "k8s_healthy_s")):
            latency = (facts.get(key) or {}).get("latency_s")
            if isinstance(latency, (int, float)):
                seen[name].append(round(float(latency), 2))
    return _ranges(seen)


def seed_figures(results: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """From each kernel's guest results, the seed check's figures as ``[low, high]`` over the
    kernels and the scenarios with devices: ``sandbox plan`` to L2 seeing its devices over the
    same VM without devices (``seed_to_devices_ratio``), QEMU start over the baseline's
    (``seed_qemu_start_ratio``), and the functions passed (``seed_functions``). A scenario
    that never reached L2's devices, or a boot without a baseline, gives nothing."""
    seen: dict[str, list[float]] = {
        "seed_to_devices_ratio": [],
        "seed_qemu_start_ratio": [],
        "seed_functions": [],
    }
    for result in results:
        entry = result.get("checks", {}).get("seed_e2e") or {}
        scenarios = (entry.get("facts") or {}).get("scenarios") or {}
        base = (scenarios.get("baseline") or {}).get("timing") or {}
        if not _positive(base.get("to_devices_s")) or not _positive(base.get("qemu_start_s")):
            continue
        for name, scenario in scenarios.items():
            timing = scenario.get("timing") or {}
            functions = (scenario.get("plan") or {}).get("functions") or []
            if name == "baseline" or not functions or not _positive(timing.get("to_devices_s")):
                continue
            seen["seed_to_devices_ratio"].append(
                round(timing["to_devices_s"] / base["to_devices_s"], 2)
            )
            if _positive(timing.get("qemu_start_s")):
                seen["seed_qemu_start_ratio"].append(
                    round(timing["qemu_start_s"] / base["qemu_start_s"], 2)
                )
            seen["seed_functions"].append(float(len(functions)))
    return _ranges(seen)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def dra_figures(results: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """From each kernel's guest results, the DRA check's prepare and unprepare of the
    two-function group on the real kernel: the median time in ms and the median share of it
    spent in sysfs writes (the drivers' remove and probe), as ``[low, high]`` over the
    kernels; a check that failed gives nothing."""
    seen: dict[str, list[float]] = {}
    for result in results:
        facts = (result.get("checks", {}).get("dra") or {}).get("facts") or {}
        timings = facts.get("timings") or {}
        if "error" in timings:
            continue
        for step in ("prepare", "unprepare"):
            totals, writes = timings.get(step) or [], timings.get(f"{step}_writes") or []
            if not totals or len(totals) != len(writes) or min(totals) <= 0:
                continue
            shares = [w / t for w, t in zip(writes, totals, strict=True)]
            median_ms = round(statistics.median(totals) * 1000, 1)
            seen.setdefault(f"dra_{step}_ms", []).append(median_ms)
            median_share = round(statistics.median(shares), 2)
            seen.setdefault(f"dra_{step}_writes_share", []).append(median_share)
    return _ranges(seen)


def _ranges(seen: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """Each figure seen at least once as ``[low, high]``."""
    return {name: [min(values), max(values)] for name, values in seen.items() if values}
