#!/usr/bin/env python3
"""Renders the README's figures from the runners' results files, so none is typed by hand.

    python tools/figures.py            # rewrite the marked blocks (README.md, benches/RESULTS.md)
    python tools/figures.py --check    # exit 1 and show the difference when a block is stale

The results files (``benches/results/*.json``, see ``benches/bench_results.py``) are written
by the benchmark runners (``--results``) and the lab (``KATA_VFIO_LAB_RESULTS``). A marked
block is everything between ``<!-- figures:NAME:start -->`` and ``<!-- figures:NAME:end -->``;
each figure shown is the range over the file's runs (a single value when they agree).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benches"))

from bench_results import RESULTS_DIR, load  # noqa: E402

Runs = list[dict[str, Any]]
_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


# --- reading the runs -----------------------------------------------------------------------


def _figures(runs: Runs) -> list[dict[str, Any]]:
    return [run["figures"] for run in runs]


def _get(figures: dict[str, Any], path: str) -> Any:
    value: Any = figures
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def span(runs: Runs, path: str) -> tuple[float, float] | None:
    """The lowest and highest value of figure ``path`` (``a.b`` for nested) over ``runs``;
    None when no run has it."""
    values: list[float] = []
    for figures in _figures(runs):
        value = _get(figures, path)
        if value is None:
            continue
        values += [float(v) for v in value] if isinstance(value, list) else [float(value)]
    return (min(values), max(values)) if values else None


def latest(runs: Runs, path: str) -> Any:
    """Figure ``path`` of the newest run that has it."""
    for figures in reversed(_figures(runs)):
        value = _get(figures, path)
        if value is not None:
            return value
    raise SystemExit(f"no run in the results has the figure {path!r}")


def alike(runs: Runs, *keys: str) -> Runs:
    """The runs measured like the newest one (same sizes named by ``keys``): only their
    ratios can be put side by side."""
    want = [_get(runs[-1]["figures"], key) for key in keys]
    return [run for run in runs if [_get(run["figures"], key) for key in keys] == want]


def run_count(runs: Runs) -> int:
    """How many measurements the runs stand for (a run may summarize several)."""
    return sum(int(run.get("runs_summarized", 1)) for run in runs)


# --- formatting -----------------------------------------------------------------------------


def fmt(bounds: tuple[float, float] | None, spec: str, suffix: str = "", sign: str = "") -> str:
    """``1.2x`` or ``1.18x-1.26x``: each end formatted with ``spec``, equal ends once."""
    if bounds is None:
        return "not measured"
    low, high = (format(v, sign + spec) + suffix for v in bounds)
    return low if low == high else f"{low}-{high}"


def percent(runs: Runs, path: str, spec: str) -> str:
    """A share figure (0.12) as a percent range (``12%`` or ``10%-12%``)."""
    bounds = span(runs, path)
    return fmt(None if bounds is None else (bounds[0] * 100, bounds[1] * 100), spec, "%")


def count_words(count: int) -> str:
    return _WORDS[count] if count < len(_WORDS) else str(count)


def table(rows: Iterable[tuple[str, str]], header: tuple[str, str] = ("what", "result")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {what} | {result} |" for what, result in rows]
    return "\n".join(lines)


def wrap(text: str, width: int = 95) -> str:
    """Greedy line wrap at spaces (Markdown prose; code spans are never split)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


# --- the blocks -----------------------------------------------------------------------------


def scan_rows(runs: Runs) -> list[tuple[str, str]]:
    same = alike(runs, "largest")
    size = int(latest(runs, "largest"))
    rows = [
        (
            f"full scan, {size:,} functions: Rust core / floor (minimal Rust loop doing only the "
            "needed syscalls, confined to the root, regular files only, the kernel's group lists)",
            f"{fmt(span(same, 'rust_over_floor_cpu'), '.2f', 'x')} CPU time, "
            f"{fmt(span(same, 'rust_over_floor_wall'), '.2f', 'x')} wall",
        )
    ]
    if span(runs, "new_floor_over_previous.cpu") is not None:
        rows.append(
            (
                "what those safety checks cost: new floor / previous floor, same run",
                f"{fmt(span(runs, 'new_floor_over_previous.cpu'), '.2f', 'x')} CPU time, "
                f"{fmt(span(runs, 'new_floor_over_previous.wall'), '.2f', 'x')} wall",
            )
        )
    sizes = sorted({int(s) for f in _figures(runs) for s in (_get(f, "lspci_over_rust") or {})})
    lspci = ", ".join(
        f"{fmt(span(runs, f'lspci_over_rust.{n}'), '.1f', 'x')} at {n:,}" for n in sizes
    )
    rss = span(same, "rss_per_function")
    rows += [
        (
            f"naive Python scan (absolute paths, realpath) / Rust core, {size:,}",
            fmt(span(same, "naive_over_rust"), ".0f", "x"),
        ),
        ("`lspci -nnk` / Rust core", lspci),
        (
            "pure-Python reference scan / Rust core",
            fmt(span(runs, "reference_over_rust"), ".1f", "x"),
        ),
        (
            "held scan result",
            f"about {fmt(None if rss is None else (rss[0] / 1e3, rss[1] / 1e3), '.1f')} KB "
            "per function",
        ),
        ("`import kata_vfio`", f"about {fmt(span(runs, 'import_ms'), '.0f')} ms"),
    ]
    return rows


def cdi_rows(runs: Runs) -> list[tuple[str, str]]:
    same = alike(runs, "files", "devices", "injected", "many_nodes")
    files, devices = int(latest(runs, "files")), int(latest(runs, "devices"))
    many = int(latest(runs, "many_nodes"))

    return [
        (
            f"CDI registry refresh with nothing changed / full load ({files:,} files, "
            f"{devices:,} devices)",
            f"{percent(same, 'refresh_over_load_yaml', '.2f')} (YAML), "
            f"{percent(same, 'refresh_over_load_json', '.2f')} (JSON)",
        ),
        (
            f"CDI injection of {latest(runs, 'injected')} devices / deep copy of the spec",
            fmt(span(same, "inject_over_deepcopy"), ".1f", "x"),
        ),
        (
            f"CDI injection of {many:,} device nodes / of {many // 10:,} (linear: ~10x, "
            "quadratic: ~100x)",
            fmt(span(same, "many_over_few"), ".1f", "x"),
        ),
    ]


def sandbox_rows(runs: Runs) -> list[tuple[str, str]]:
    return [
        (
            "sandbox plan (8 GPUs with audio + 4 NICs) / host scan with details",
            f"{fmt(span(runs, 'sandbox_over_scan'), '.1f', 'x')} (container plan "
            f"{fmt(span(runs, 'container_over_scan'), '.2f', 'x')})",
        )
    ]


def benchmarks_block(results: dict[str, Runs]) -> str:
    return table(
        [*scan_rows(results["scan"]), *cdi_rows(results["cdi"]), *sandbox_rows(results["sandbox"])]
    )


def k8s_block(results: dict[str, Runs]) -> str:
    runs = results["k8s"]
    one, burst, pref = "allocate_one", "allocate_burst", "preferred"
    health_source = latest(runs, "health.source")
    real = "real kernel uevent" if "netlink" in health_source else "injected event"
    health = [run for run in runs if _get(run["figures"], "health.source") == health_source]
    plateau = span(runs, "idle.plateau_growth_mib")
    leak = "no leak" if plateau is not None and plateau[1] < 1 else "check for a leak"
    minutes = float(latest(runs, "idle.minutes"))

    def s(path: str, spec: str, suffix: str = "") -> str:
        return fmt(span(runs, path), spec, suffix)

    rows = [
        (
            f"`Allocate`, {latest(runs, 'units')} units, one call at a time "
            "(the kubelet's pattern)",
            f"p50 {s(f'{one}.p50_ms', '.1f')} ms, p99 {s(f'{one}.p99_ms', '.1f')} ms; a no-op "
            f"gRPC call: {s(f'{one}.noop_p50_ms', '.2f')} / {s(f'{one}.noop_p99_ms', '.1f')} ms "
            f"({s(f'{one}.p99_over_noop', '.1f', 'x')} at p99)",
        ),
        (
            "`Allocate`, 100 calls at once",
            f"p50 {s(f'{burst}.p50_ms', '.0f')} ms, p99 {s(f'{burst}.p99_ms', '.0f')} ms; the "
            f"no-op call in the same burst: {s(f'{burst}.noop_p50_ms', '.0f')} / "
            f"{s(f'{burst}.noop_p99_ms', '.0f')} ms ({s(f'{burst}.p99_over_noop', '.1f', 'x')} "
            "at p99); the 5 ms target is below what any Python gRPC server does on 2 cores "
            "(calls queue behind one interpreter)",
        ),
        (
            f"`GetPreferredAllocation`, {latest(runs, 'preferred_units')} units",
            f"p50 {s(f'{pref}.p50_ms', '.1f')} ms, p99 {s(f'{pref}.p99_ms', '.1f')} ms "
            f"({s(f'{pref}.p50_over_noop', '.1f', 'x')} / {s(f'{pref}.p99_over_noop', '.1f', 'x')}"
            " a no-op call)",
        ),
        (
            f"health change ({real}) to `ListAndWatch`, {latest(runs, 'health.flips'):,} flips",
            f"{fmt(span(health, 'health.lost'), '.0f')} lost; p50 "
            f"{fmt(span(health, 'health.p50_ms'), '.0f')} ms, p99 "
            f"{fmt(span(health, 'health.p99_ms'), '.0f')} ms (one rescan: "
            f"{fmt(span(health, 'health.rescan_ms'), '.1f')} ms)",
        ),
        (
            "re-registration after a kubelet restart",
            f"p50 {s('reregistration.p50_ms', '.0f')} ms, "
            f"max {s('reregistration.max_ms', '.0f')} ms",
        ),
        (
            f"idle, {latest(runs, 'idle.functions'):,} functions, 30 s rescan, "
            f"{minutes:.0f} minute{'' if round(minutes) == 1 else 's'}",
            f"{s('idle.cpu_percent', '.2f', '%')} of a core; RSS "
            f"{fmt(span(runs, 'idle.rss_growth_mib'), '.1f', sign='+')} MiB, all in the first "
            f"rescans ({fmt(plateau, '.1f', sign='+')} MiB over the next "
            f"{latest(runs, 'idle.plateau_rescans'):,} rescans: {leak})",
        ),
    ]
    return table(rows)


def lab_block(results: dict[str, Runs]) -> str:
    runs = results["lab"]
    count = run_count(runs)
    text = (
        "Measured on the 2-core development machine, shared with other jobs "
        f"({count_words(count)} full run{'' if count == 1 else 's'}): Debian's kernel boots and "
        f"runs every check in {fmt(span(runs, 'debian_s'), '.0f')} s of wall time (most of it "
        "the nested QEMU: TCG inside TCG), the lab kernel in "
        f"{fmt(span(runs, 'lab_s'), '.0f')} s; `pytest tests/lab` takes "
        f"{fmt(span(runs, 'session_s'), '.0f')} s in all."
    )
    return wrap(text)


def k8s_lab_block(results: dict[str, Runs]) -> str:
    runs = results["lab"]
    text = (
        "In the lab (real kernel 6.12 under TCG, real netlink, the agent's rescan interval an "
        "hour): giving the bound e1000e back to its driver made its unit Unhealthy in "
        f"`ListAndWatch` {fmt(span(runs, 'k8s_unhealthy_s'), '.2f')} s after the first sysfs "
        f"write, binding it again Healthy {fmt(span(runs, 'k8s_healthy_s'), '.2f')} s after, "
        "both through uevents."
    )
    return wrap(text)


def dra_lab_block(results: dict[str, Runs]) -> str:
    runs = results["lab"]
    text = (
        "In the lab (real kernels under TCG), preparing a claim for the two-function e1000e "
        f"group took {fmt(span(runs, 'dra_prepare_ms'), '.0f')} ms (median of five, "
        f"{percent(runs, 'dra_prepare_writes_share', '.0f')} of it in the sysfs writes, where "
        "the kernel runs e1000e's remove and vfio-pci's probe) and unpreparing it "
        f"{fmt(span(runs, 'dra_unprepare_ms'), '.0f')} ms "
        f"({percent(runs, 'dra_unprepare_writes_share', '.0f')} in the writes): the plugin's "
        "own share is what remains."
    )
    return wrap(text)


def seed_block(results: dict[str, Runs]) -> str:
    runs = [run for run in results["lab"] if _get(run["figures"], "seed_to_devices_ratio")]
    functions = span(runs, "seed_functions")
    text = (
        "In the lab (TCG in TCG), the seed end to end — `sandbox plan` to the guest seeing its "
        f"{fmt(functions, '.0f')} passed functions — took "
        f"{fmt(span(runs, 'seed_to_devices_ratio'), '.2f', 'x')} the same VM booted without "
        "devices in the same lab boot, load-dominated (QEMU start alone, where VFIO pins the "
        f"guest's memory first: {fmt(span(runs, 'seed_qemu_start_ratio'), '.1f', 'x')}); "
        "details in `benches/SEED-E2E-RESULTS.md`."
    )
    return wrap(text)


def scan_targets_block(results: dict[str, Runs]) -> str:
    runs = alike(results["scan"], "largest")
    size = int(latest(runs, "largest"))
    cpu, wall = span(runs, "rust_over_floor_cpu"), span(runs, "rust_over_floor_wall")
    naive = span(runs, "naive_over_rust")
    lspci = {int(n) for f in _figures(runs) for n in (_get(f, "lspci_over_rust") or {})}
    at_size = span(runs, f"lspci_over_rust.{size}")
    others = ", ".join(
        f"{fmt(span(runs, f'lspci_over_rust.{n}'), '.1f', 'x')} at {n:,}"
        for n in sorted(lspci - {size})
    )
    floor_verdict = "met in CPU time" if cpu is not None and cpu[1] <= 1.3 else "not met"
    floor_verdict += (
        "; wall depends on the neighbours" if wall is None or wall[1] > 1.3 else "; wall too"
    )
    rows = [
        (
            "Rust core within 1.3x of the floor",
            f"CPU time {fmt(cpu, '.2f', 'x')} over {count_words(run_count(runs))} runs; "
            f"wall {fmt(wall, '.2f', 'x')}",
            floor_verdict,
        ),
        (
            "at least 10x faster than the naive scan",
            fmt(naive, ".1f", "x"),
            "met" if naive is not None and naive[0] >= 10 else "not met in every run",
        ),
        (
            "at least 3x faster than lspci",
            f"{fmt(at_size, '.1f', 'x')} at {size:,}" + (f" ({others})" if others else ""),
            f"met at {size:,} in these runs"
            if at_size is not None and at_size[0] >= 3
            else "not met in every run",
        ),
    ]
    lines = ["| target | measured here | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


# Which file holds which block, and what renders it.
BLOCKS: dict[str, tuple[str, Callable[[dict[str, Runs]], str]]] = {
    "benchmarks": ("README.md", benchmarks_block),
    "k8s": ("README.md", k8s_block),
    "lab": ("README.md", lab_block),
    "k8s-lab": ("README.md", k8s_lab_block),
    "seed": ("README.md", seed_block),
    "dra-lab": ("README.md", dra_lab_block),
    "scan-targets": ("benches/RESULTS.md", scan_targets_block),
}


def load_results(directory: Path = RESULTS_DIR) -> dict[str, Runs]:
    """Every results file in ``directory``, by benchmark name (its file name)."""
    return {path.stem: load(path)["runs"] for path in sorted(directory.glob("*.json"))}


def _pattern(name: str) -> re.Pattern[str]:
    marker = re.escape(name)
    return re.compile(
        rf"(<!-- figures:{marker}:start -->\n)(.*?)(<!-- figures:{marker}:end -->)", re.DOTALL
    )


def marked_block(text: str, name: str) -> str | None:
    """The text of block ``name`` in ``text`` (without the markers), None when unmarked."""
    match = _pattern(name).search(text)
    return None if match is None else match.group(2)


def render_file(text: str, names: Iterable[str], results: dict[str, Runs]) -> str:
    """``text`` with the blocks ``names`` rendered anew; a missing marker is an error."""
    for name in names:
        if marked_block(text, name) is None:
            raise SystemExit(f"the figures block {name!r} has no markers in its file")
        match = _pattern(name).search(text)
        assert match is not None  # checked above
        rendered = BLOCKS[name][1](results) + "\n"
        text = text[: match.start(2)] + rendered + text[match.end(2) :]
    return text


def rendered_files(root: Path, results: dict[str, Runs]) -> dict[Path, tuple[str, str]]:
    """Every file with blocks: (its text now, its text with the blocks rendered)."""
    by_file: dict[str, list[str]] = {}
    for name, (file, _) in BLOCKS.items():
        by_file.setdefault(file, []).append(name)
    out = {}
    for file, names in by_file.items():
        path = root / file
        text = path.read_text()
        out[path] = (text, render_file(text, names, results))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    results = load_results(args.results_dir)
    stale = False
    for path, (now, rendered) in rendered_files(REPO, results).items():
        if now == rendered:
            continue
        stale = True
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    now.splitlines(keepends=True),
                    rendered.splitlines(keepends=True),
                    f"{path.name} (now)",
                    f"{path.name} (from {args.results_dir})",
                )
            )
        else:
            path.write_text(rendered)
            print(f"rewrote the figures in {path.relative_to(REPO)}")
    if stale and args.check:
        print("figures are stale or typed by hand: run python tools/figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
