"""Scan benchmark runner: one table, every contender measured in the same run on the same
generated trees (tmpfs), figures as ratios to the floor measured alongside.

Contenders, for 100 / 1,000 / 10,000 functions:

- floor: ``rust/kata-vfio-core/examples/scan_floor.rs``, only the syscalls a listing needs,
  single thread and split over threads (its own timer: no process start counted);
- Rust core: ``kata_vfio.scan`` (GIL released, threads picked by the core), devices and groups
  turned into Python objects;
- reference: ``tests/oracles/refscan.py``, pure Python written for speed;
- naive: ``benches/naive_scan.py``, absolute paths, one file per attribute, realpath;
- lspci: ``lspci -nnk -O sysfs.path=...`` as a subprocess, whole run.

Also: resident memory per device of a held Host (RSS delta in a fresh process), the cost of
``import kata_vfio``, and with ``--syscalls`` the syscall counts per device (strace -c).

Usage: ``python benches/run_scan_bench.py [--sizes 100,1000,10000] [--repeat 5]
[--write benches/RESULTS.md] [--results benches/results/scan.json]``; ``--results`` adds the
run's summary figures to that file, which ``tools/figures.py`` renders into the README.
``--smoke`` (CI) runs every contender once on a small tree: it proves the runner works, its
figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))  # the reference scanner lives with the test oracles

import kata_vfio  # noqa: E402
from bench_results import record_run  # noqa: E402
from kata_vfio.testing import FakeHost  # noqa: E402
from naive_scan import naive_scan  # noqa: E402
from oracles import refscan  # noqa: E402
from trees import bench_host  # noqa: E402

Timer = Callable[[FakeHost], float]


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def rust_scan(host: FakeHost) -> float:
    def work() -> None:
        scanned = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)
        _ = (scanned.devices, scanned.groups)

    return _timed(work)


def reference_scan(host: FakeHost) -> float:
    return _timed(lambda: refscan.scan(host.sysfs_root, host.dev_root, host.proc_root))


def naive(host: FakeHost) -> float:
    return _timed(lambda: naive_scan(host.sysfs_root))


def lspci(host: FakeHost) -> float:
    argv = ["lspci", "-nnk", "-O", f"sysfs.path={host.sysfs_root}/bus/pci"]
    return _timed(
        lambda: subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
    )


def floor_binary(explicit: str | None) -> str | None:
    """The scan_floor example, built with cargo when it is not there yet."""
    if explicit:
        return explicit
    path = REPO / "target/release/examples/scan_floor"
    if not path.exists() and shutil.which("cargo"):
        subprocess.run(
            [
                "cargo",
                "build",
                "--release",
                "-q",
                "-p",
                "kata-vfio-core",
                "--example",
                "scan_floor",
            ],
            cwd=REPO,
            check=True,
        )
    return str(path) if path.exists() else None


def floor(binary: str, host: FakeHost, repeat: int, threads: int) -> float:
    out = subprocess.run(
        [binary, host.sysfs_root, str(repeat), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"best_ns=(\d+)", out)
    if match is None:
        raise RuntimeError(f"scan_floor printed {out!r}")
    return int(match.group(1)) / 1e9


def interleaved(
    timers: dict[str, Timer], host: FakeHost, rounds: int
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Runs every contender once per round, ``rounds`` times, so that a change in machine
    load hits all of them alike. Returns each contender's best time and every round's times
    (for per-round ratios)."""
    for timer in timers.values():
        timer(host)  # warm the dentry cache and the code paths
    per_round = [{name: timer(host) for name, timer in timers.items()} for _ in range(rounds)]
    best = {name: min(r[name] for r in per_round) for name in timers}
    return best, per_round


def median_ratio(per_round: list[dict[str, float]], top: str, bottom: str) -> float:
    """The median over rounds of ``top / bottom`` measured in the same round."""
    if not per_round or top not in per_round[0] or bottom not in per_round[0]:
        return float("nan")
    return statistics.median(r[top] / r[bottom] for r in per_round)


_RSS_PROBE = """
import gc, sys
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * {page}
sys.path.insert(0, {tests!r})
import kata_vfio
from oracles import refscan
scan = kata_vfio.scan if sys.argv[1] == 'rust' else refscan.scan
gc.collect(); before = rss()
host = scan(sys.argv[2], sys.argv[3]); _ = (host.devices, host.groups)
gc.collect(); print(rss() - before)
"""


def rss_per_device(which: str, host: FakeHost, count: int) -> float:
    code = _RSS_PROBE.format(page=os.sysconf("SC_PAGE_SIZE"), tests=str(REPO / "tests"))
    out = subprocess.run(
        [sys.executable, "-c", code, which, host.sysfs_root, host.dev_root],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip()) / count


def import_cost(repeat: int) -> tuple[float, float]:
    """(median over paired runs of ``python -c 'import kata_vfio'`` minus ``python -c pass``,
    self-reported cumulative import time of kata_vfio from ``-X importtime``)."""

    def run(code: str) -> float:
        return _timed(lambda: subprocess.run([sys.executable, "-c", code], check=True))

    # Paired runs, median difference: robust against a machine whose load changes.
    diffs = [run("import kata_vfio") - run("pass") for _ in range(repeat)]
    extra = statistics.median(diffs)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import kata_vfio"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    cumulative = 0
    for line in trace.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "kata_vfio":
            cumulative = int(parts[1])
    return extra, cumulative / 1e6


def cpu_seconds(command: list[str]) -> tuple[float, float]:
    """(user, system) CPU seconds a child process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


_CPU_PROBE = (
    "import sys, kata_vfio\n"
    "for _ in range(int(sys.argv[3])):\n"
    "    h = kata_vfio.scan(sys.argv[1], sys.argv[2]); _ = (h.devices, h.groups)\n"
)


def cpu_per_scan(binary: str, host: FakeHost, scans: int) -> dict[str, tuple[float, float]]:
    """CPU time (user, system) of one scan: the Rust core (a Python process scanning
    ``scans`` times, less the same process scanning once) and the floor (likewise). CPU
    time does not count waiting for a busy machine, so it compares fairly under load."""
    out = {}
    for name, command in (
        ("rust", [sys.executable, "-c", _CPU_PROBE, host.sysfs_root, host.dev_root]),
        ("floor", [binary, host.sysfs_root]),
    ):
        tail = [str(scans)] if name == "rust" else [str(scans), "1"]
        one = ["1"] if name == "rust" else ["1", "1"]
        many_u, many_s = cpu_seconds([*command, *tail])
        one_u, one_s = cpu_seconds([*command, *one])
        out[name] = ((many_u - one_u) / (scans - 1), (many_s - one_s) / (scans - 1))
    return out


def syscalls_per_device(command: list[str], count: int) -> float | None:
    """Syscalls per device of one run of ``command`` (strace -f -c), None without strace."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            ["strace", "-f", "-c", "-o", out.name, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        text = out.read()
    match = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)\s+(\d+)?\s*total", text, re.MULTILINE)
    return None if match is None else int(match.group(1)) / count


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}, trees on tmpfs, load average {load:.1f} at start"
    )


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--floor", help="path of a built scan_floor example")
    parser.add_argument("--syscalls", action="store_true", help="count syscalls with strace")
    parser.add_argument("--write", help="also write the report (markdown) to this file")
    parser.add_argument("--results", help="add the run's summary figures to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="CI: tiny tree, one round")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = "100", 1
    sizes = [int(s) for s in args.sizes.split(",")]
    binary = floor_binary(args.floor)
    has_lspci = shutil.which("lspci") is not None
    threads = os.cpu_count() or 1

    header = (
        f"| functions | floor 1T ms | floor x{threads} ms | Rust core ms | reference ms | "
        "naive ms | lspci ms | Rust / floor | naive / Rust | lspci / Rust | reference / Rust |"
    )
    lines = [header, "|" + "---|" * 11]
    memory = []
    syscalls = []
    cpu_rows = []
    per_size: dict[int, dict[str, float]] = {}
    for count in sizes:
        host = bench_host(count)
        rounds = args.repeat if count < 10_000 or args.smoke else max(3, args.repeat // 2)
        timers: dict[str, Timer] = {
            "rust": rust_scan,
            "ref": reference_scan,
            "naive": naive,
        }
        if binary:
            timers["floor1"] = lambda h, b=binary: floor(b, h, 1, 1)
            timers["floorN"] = lambda h, b=binary: floor(b, h, 1, threads)
        if has_lspci:
            timers["lspci"] = lspci
        got, per_round = interleaved(timers, host, rounds)
        for r in per_round:
            r["floor"] = min(r.get("floor1", float("nan")), r.get("floorN", float("nan")))
        nan = float("nan")
        f1, fn = got.get("floor1", nan), got.get("floorN", nan)
        rust, ref, slow, ls = got["rust"], got["ref"], got["naive"], got.get("lspci", nan)
        lines.append(
            f"| {count:,} | {fmt_ms(f1)} | {fmt_ms(fn)} | {fmt_ms(rust)} | {fmt_ms(ref)} | "
            f"{fmt_ms(slow)} | {fmt_ms(ls)} | {median_ratio(per_round, 'rust', 'floor'):.2f} | "
            f"{median_ratio(per_round, 'naive', 'rust'):.1f} | "
            f"{median_ratio(per_round, 'lspci', 'rust'):.1f} | "
            f"{median_ratio(per_round, 'ref', 'rust'):.1f} |"
        )
        print(lines[-1], flush=True)
        figures = per_size[count] = {
            "rust_over_floor_wall": median_ratio(per_round, "rust", "floor"),
            "naive_over_rust": median_ratio(per_round, "naive", "rust"),
            "lspci_over_rust": median_ratio(per_round, "lspci", "rust"),
            "reference_over_rust": median_ratio(per_round, "ref", "rust"),
        }
        if binary:
            cpu = cpu_per_scan(binary, host, 3 if args.smoke else 6 if count < 10_000 else 4)
            (ru, rs), (fu, fs) = cpu["rust"], cpu["floor"]
            figures["rust_over_floor_cpu"] = (ru + rs) / (fu + fs)
            cpu_rows.append(
                f"| {count:,} | {fmt_ms(ru)} | {fmt_ms(rs)} | {fmt_ms(fu)} | {fmt_ms(fs)} | "
                f"{(ru + rs) / (fu + fs):.2f} |"
            )
        figures["rss_per_function"] = rss_per_device("rust", host, count)
        memory.append(
            f"| {count:,} | {figures['rss_per_function']:.0f} | "
            f"{rss_per_device('ref', host, count):.0f} |"
        )
        if args.syscalls and binary:
            rust_cmd = [
                sys.executable,
                "-c",
                "import sys, kata_vfio; h = kata_vfio.scan(sys.argv[1], sys.argv[2]); h.devices",
                host.sysfs_root,
                host.dev_root,
            ]
            per_rust = syscalls_per_device(rust_cmd, count)
            per_floor = syscalls_per_device([binary, host.sysfs_root, "1", "1"], count)
            syscalls.append(f"| {count:,} | {per_floor:.1f} | {per_rust:.1f} |")
    wall, self_reported = import_cost(3 if args.smoke else 21)
    report = [
        "# Scan benchmark",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on: {machine()}.",
        "Times: best of several full scans of generated hosts (`kata_vfio.testing.generate`, "
        "seed 2024), contenders interleaved round by round in one run; ratios: median over "
        "rounds of the ratio within a round (floor = the faster of 1T and xN). `floor` is "
        "`rust/kata-vfio-core/examples/scan_floor.rs` (only the listing's syscalls, own timer; "
        f"x{threads} = split over {threads} threads); lspci is a whole process run.",
        "",
        *lines,
        "",
        "CPU time of one scan (user and system, ms; the difference between processes that "
        "scan several times and once), which waiting for a busy machine does not inflate:",
        "",
        "| functions | Rust user | Rust sys | floor user | floor sys | Rust / floor (CPU) |",
        "|---|---|---|---|---|---|",
        *cpu_rows,
        "",
        "Resident memory of a held scan result, bytes per function (RSS delta, fresh process):",
        "",
        "| functions | Rust core Host | reference scan |",
        "|---|---|---|",
        *memory,
        "",
        f"`import kata_vfio`: {wall * 1e3:.1f} ms wall over bare `python -c pass` "
        f"({self_reported * 1e3:.1f} ms by `-X importtime`).",
    ]
    if syscalls:
        report += [
            "",
            "Syscalls per function (strace -f -c, whole process, one scan):",
            "",
            "| functions | floor | Rust core (python process) |",
            "|---|---|---|",
            *syscalls,
        ]
    text = "\n".join(report) + "\n"
    print()
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    if args.results:
        record_run(Path(args.results), "scan", summary(per_size, wall))
    return 0


def summary(per_size: dict[int, dict[str, float]], import_s: float) -> dict[str, object]:
    """The figures the README quotes (tools/figures.py): those of the largest tree, lspci per
    size, the reference scan's range over sizes; a ratio that could not be taken (no lspci,
    no floor) is left out."""
    largest = max(per_size)
    top = per_size[largest]

    def known(value: float) -> bool:
        return value == value  # not NaN

    figures: dict[str, object] = {"largest": largest, "import_ms": import_s * 1e3}
    for key in ("rust_over_floor_cpu", "rust_over_floor_wall", "naive_over_rust",
                "rss_per_function"):  # fmt: skip
        if key in top and known(top[key]):
            figures[key] = top[key]
    lspci = {str(n): f["lspci_over_rust"] for n, f in per_size.items()}
    lspci = {size: ratio for size, ratio in lspci.items() if known(ratio)}
    if lspci:
        figures["lspci_over_rust"] = lspci
    references = [f["reference_over_rust"] for f in per_size.values()]
    figures["reference_over_rust"] = [min(references), max(references)]
    return figures


if __name__ == "__main__":
    sys.exit(main())
