"""Node agent benchmarks: percentiles and ratios against baselines measured in the same run.

    python benches/run_k8s_bench.py [--quick] [--duration S] [--real-uevents] [--output FILE]
        [--results benches/results/k8s.json] [--smoke]

Everything talks to the real gRPC servers over unix sockets, with the fake kubelet from
``tests/k8s`` (built from the official protos) as the client, as the kubelet would:

* ``Allocate`` on a host with 64 units, the agent in its own process: 1,000 calls one after
  the other (the kubelet admits one pod at a time), and rounds of 100 calls fired at once on
  one channel; p50/p99 against the same pattern of ``GetDevicePluginOptions`` (a call that
  does nothing: gRPC's own cost, the floor for any Python plugin);
* ``GetPreferredAllocation`` with 16 units (2 NUMA nodes x 2 switches x 4), random sizes and
  ``must_include``; p50/p99 against the no-op call;
* health change to ``ListAndWatch``: 1,000 flips of one GPU between vfio-pci and unbound on the
  sample host; each flip is a driver change in the fake sysfs plus an event to the agent,
  timed until the kubelet's stream shows the new health; lost updates counted (a flip whose
  state never arrives); against one rescan (scan, inventory, CDI sync) of the same host. With
  ``--real-uevents`` (root, a writable /sys) the event is a real kernel uevent (a ``change``
  written to a PCI device's ``uevent``), read over netlink by the Rust core;
* re-registration: the fake kubelet restarts (socket recreated, the plugin's removed), timed
  until the plugin has registered again;
* idle: the agent as its own process on a 2,000-function host at the default 30 s rescan,
  with the kubelet's ListAndWatch open: CPU time over ``--duration`` seconds (default 600,
  ``--quick`` 20) as a share of one core, and the RSS growth; then, to tell a leak from the
  allocator's warm-up, the RSS across 1,000 rescans 0.2 s apart (``--quick``: 100).

Absolute times depend on the machine (a shared 2-core VM here); the ratios compare figures
taken in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "k8s"))
sys.path.insert(0, str(HERE))

import grpc  # noqa: E402
from fake_kubelet import API, PB, FakeKubelet, PluginClient  # noqa: E402
from k8s_hosts import HostBuilder, RunningAgent  # noqa: E402

import kata_vfio  # noqa: E402
from bench_results import record_run  # noqa: E402
from kata_vfio.k8s.cdispec import CdiSpecWriter  # noqa: E402
from kata_vfio.k8s.watch import HostWatcher, KernelEvents, NoEvents, WatchConfig  # noqa: E402
from kata_vfio.samples import sample_host  # noqa: E402
from kata_vfio.testing import HostSpec, build_host  # noqa: E402
from kata_vfio.testing.spec import DeviceSpec  # noqa: E402
from kata_vfio.testing.topology import number_groups, switch  # noqa: E402
from trees import bench_host  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Counts:
    """How much each measurement does: the full run, ``--quick``, or ``--smoke`` (CI: every
    path once or twice, so the runner cannot rot; its figures mean nothing)."""

    calls: int = 1000
    bursts: int = 20
    warmup: int = 50
    flips: int = 1000
    rescans: int = 300
    reregistrations: int = 30
    settle: float = 30.0
    plateau: int = 1000
    idle_functions: int = 2000


QUICK = Counts(calls=200, bursts=4, flips=100, rescans=100, reregistrations=5, settle=5.0,
               plateau=100)  # fmt: skip
SMOKE = Counts(calls=5, bursts=1, warmup=2, flips=4, rescans=3, reregistrations=1, settle=0.5,
               plateau=21, idle_functions=200)  # fmt: skip

GPU = "0000:18:00.0"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
        "n": len(values),
    }


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def burst(socket: str, make_call: Callable[[Any], Any], width: int, rounds: int) -> list[float]:
    """``rounds`` times, ``width`` calls issued at once on one channel (asyncio client: the
    client's own overhead stays small); each call's latency."""

    async def run() -> list[float]:
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            stub = API.services.DevicePluginStub(channel)

            async def one() -> float:
                start = time.perf_counter()
                await make_call(stub)
                return time.perf_counter() - start

            for _ in range(20):
                await one()
            latencies: list[float] = []
            for _ in range(rounds):
                latencies += await asyncio.gather(*(one() for _ in range(width)))
            return latencies

    return asyncio.run(run())


class AgentProcess:
    """``kata-vfio k8s device-plugin`` as its own process on a fake host, registered with a
    fake kubelet in this process (the deployment's shape: the kubelet is another process)."""

    def __init__(self, root: Path, host: Any) -> None:
        plugin_dir = root / "device-plugins"
        self.kubelet = FakeKubelet(str(plugin_dir)).start()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kata_vfio", "--sysfs-root", host.sysfs_root,
             "--dev-root", host.dev_root, "--proc-root", host.proc_root, "k8s",
             "device-plugin", "--plugin-dir", str(plugin_dir), "--cdi-dir", str(root / "cdi")],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        registration = self.kubelet.wait_registration(120)
        self.socket = str(plugin_dir / registration.endpoint)
        self.client = PluginClient(self.socket)

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(60)
        self.kubelet.stop()


class Node:
    """A fake host served by the agent in this process, with a fake kubelet."""

    def __init__(self, root: Path, host: Any, events: Any = None) -> None:
        self.kubelet = FakeKubelet(str(root / "device-plugins")).start()
        self.agent = RunningAgent(host, root / "device-plugins", root / "cdi", events=events)
        self.agent.start()
        registration = self.kubelet.wait_registration(60)
        self.client = PluginClient(str(root / "device-plugins" / registration.endpoint))

    def close(self) -> None:
        self.client.close()
        self.agent.stop()
        self.kubelet.stop()


def _gpu_host(root: Path, units: int) -> Any:
    """``units`` GPUs, each behind its own root port, half on each NUMA node."""
    builder = HostBuilder(numa_nodes=2)
    for index in range(units):
        builder.add(index + 1, numa=index * 2 // units)
    return builder.build(root / "host")


def measure_allocate(root: Path, counts: Counts) -> dict[str, Any]:
    agent = AgentProcess(root, _gpu_host(root, 64))
    try:
        watch = agent.client.watch()
        ids = list(watch.next())
        watch.cancel()
        rng = random.Random(1)

        def allocate_request() -> Any:
            return PB.AllocateRequest(
                container_requests=[PB.ContainerAllocateRequest(devices_ids=[rng.choice(ids)])]
            )

        stub = agent.client.stub
        noop = lambda: stub.GetDevicePluginOptions(PB.Empty(), timeout=10)  # noqa: E731
        allocate = lambda: stub.Allocate(allocate_request(), timeout=10)  # noqa: E731
        for _ in range(counts.warmup):  # warm the channel and the server's threads
            allocate()
            noop()
        calls = counts.calls
        seq_alloc = [timed(allocate) for _ in range(calls)]
        seq_noop = [timed(noop) for _ in range(calls)]
        rounds = counts.bursts
        conc_alloc = burst(agent.socket, lambda s: s.Allocate(allocate_request()), 100, rounds)
        conc_noop = burst(agent.socket, lambda s: s.GetDevicePluginOptions(PB.Empty()), 100, rounds)
    finally:
        agent.close()
    return {
        "units": len(ids),
        "sequential": (stats(seq_alloc), stats(seq_noop)),
        "concurrent": (stats(conc_alloc), stats(conc_noop)),
    }


def _switched_host(root: Path) -> Any:
    """16 GPUs: 2 NUMA nodes x 2 switches x 4, each switch behind its own root port."""
    devices: list[DeviceSpec] = []
    for index in range(4):
        numa = index // 2
        bus = 0x10 * (index + 1)
        port = DeviceSpec(f"0000:00:{index + 1:02x}.0", 0x8086, 0x347A, 0x060400,
                          driver="pcieport", numa_node=numa)  # fmt: skip
        devices.append(port)
        ports = switch(port.bdf, f"0000:{bus:02x}:00.0", bus + 1, 4)
        devices += [dataclasses.replace(p, numa_node=numa) for p in ports]
        for slot in range(4):
            devices.append(
                DeviceSpec(f"0000:{bus + 2 + slot:02x}:00.0", 0x10DE, 0x2330, 0x030200,
                           driver="vfio-pci", numa_node=numa,
                           parent=f"0000:{bus + 1:02x}:{slot:02x}.0")
            )  # fmt: skip
    return build_host(root / "host16", HostSpec(devices=number_groups(devices), numa_nodes=2))


def measure_preferred(root: Path, counts: Counts) -> dict[str, Any]:
    node = AgentProcess(root / "p", _switched_host(root))
    try:
        watch = node.client.watch()
        ids = sorted(watch.next())
        watch.cancel()
        rng = random.Random(2)
        noop = lambda: node.client.stub.GetDevicePluginOptions(PB.Empty(), timeout=10)  # noqa: E731

        def preferred() -> None:
            available = rng.sample(ids, rng.randint(8, 16))
            must = rng.sample(available, rng.randint(0, 2))
            node.client.preferred(available, must, rng.randint(len(must) or 1, 8))

        for _ in range(counts.warmup):
            preferred()
            noop()
        calls = counts.calls
        pref = [timed(preferred) for _ in range(calls)]
        base = [timed(noop) for _ in range(calls)]
    finally:
        node.close()
    return {"units": len(ids), "preferred": stats(pref), "noop": stats(base)}


def _real_uevent_trigger() -> Callable[[], None] | None:
    """Writes ``change`` to a real PCI function's uevent: the kernel then sends a uevent."""
    if os.geteuid() != 0:
        return None
    try:
        device = sorted(os.listdir("/sys/bus/pci/devices"))[0]
    except OSError:
        return None
    path = f"/sys/bus/pci/devices/{device}/uevent"
    if not os.access(path, os.W_OK):
        return None

    def trigger() -> None:
        with open(path, "w") as handle:
            handle.write("change")

    return trigger


def measure_health(root: Path, counts: Counts, real_uevents: bool) -> dict[str, Any]:
    host = sample_host(root / "sample")
    trigger = _real_uevent_trigger() if real_uevents else None
    kernel = KernelEvents() if trigger is not None else None
    node = Node(root / "h", host, events=kernel)
    flips = counts.flips
    watch = node.client.watch()
    watch.next()
    latencies: list[float] = []
    lost = 0
    try:
        for index in range(flips):
            healthy_next = index % 2 == 1
            start = time.perf_counter()
            if healthy_next:
                host.bind(GPU, "vfio-pci")
            else:
                host.unbind(GPU)
            if trigger is not None:
                trigger()
            else:
                node.agent.events.trigger(f"flip {index}")
            want = "Healthy" if healthy_next else "Unhealthy"
            try:
                watch.until(lambda d, w=want: d[GPU][0] == w, timeout=5)
            except Exception:
                lost += 1
                continue
            latencies.append(time.perf_counter() - start)
        watch.cancel()
    finally:
        node.close()
    # The baseline: one rescan of the same host, as the watcher does it.
    config = WatchConfig(host.paths, node.agent.config.watch.resources)
    watcher = HostWatcher(config, CdiSpecWriter(str(root / "h" / "cdi-baseline")), NoEvents())
    watcher.refresh("baseline")
    rescans = [timed(lambda: watcher.refresh("bench")) for _ in range(counts.rescans)]
    return {
        "source": "kernel uevents (netlink)" if trigger is not None else "injected events",
        "flips": flips,
        "lost": lost,
        "latency": stats(latencies) if latencies else None,
        "rescan": stats(rescans),
    }


def measure_reregistration(root: Path, counts: Counts) -> dict[str, Any]:
    """Kubelet restarts (its socket recreated, the plugin's removed): time from the new
    ``kubelet.sock`` to the plugin's new registration."""
    node = Node(root / "r", sample_host(root / "r-sample"))
    delays = []
    rng = random.Random(3)
    try:
        for _ in range(counts.reregistrations):
            time.sleep(rng.uniform(0, 1))  # a restart comes at any point of the agent's poll
            node.kubelet.restart()
            started = time.perf_counter()
            node.kubelet.wait_registration(30)
            delays.append(time.perf_counter() - started)
    finally:
        node.close()
    return stats(delays)


def _proc_cpu_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def _idle_agent(
    root: Path, interval: str, measure: Callable[[int], dict[str, Any]], functions: int
) -> Any:
    """The agent as its own process on the 2,000-function host, registered, with the
    kubelet's ListAndWatch open; ``measure(pid)`` runs meanwhile."""
    host = bench_host(functions)
    plugin_dir = root / "device-plugins"
    kubelet = FakeKubelet(str(plugin_dir)).start()
    agent = subprocess.Popen(
        [sys.executable, "-m", "kata_vfio", "--sysfs-root", host.sysfs_root,
         "--dev-root", host.dev_root, "--proc-root", host.proc_root, "k8s", "device-plugin",
         "--plugin-dir", str(plugin_dir), "--cdi-dir", str(root / "cdi"),
         "--rescan-interval", interval],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        registration = kubelet.wait_registration(120)
        client = PluginClient(str(plugin_dir / registration.endpoint))
        watch = client.watch()
        units = len(watch.next(60))
        facts = measure(agent.pid)
        watch.cancel()
        client.close()
    finally:
        agent.terminate()
        agent.wait(60)
        kubelet.stop()
    return {"functions": functions, "units": units, **facts}


def measure_idle(root: Path, duration: float, settle: float, functions: int) -> dict[str, Any]:
    """CPU and RSS over ``duration`` at the default 30 s rescan."""

    def measure(pid: int) -> dict[str, Any]:
        time.sleep(settle)
        cpu0, rss0 = _proc_cpu_rss(pid)
        wall0 = time.monotonic()
        time.sleep(duration)
        cpu1, rss1 = _proc_cpu_rss(pid)
        wall = time.monotonic() - wall0
        return {
            "duration": wall,
            "cpu_share": (cpu1 - cpu0) / wall,
            "rss_start": rss0,
            "rss_growth": rss1 - rss0,
        }

    return _idle_agent(root / "idle", "30", measure, functions)


def measure_plateau(root: Path, rescans: int, functions: int) -> dict[str, Any]:
    """RSS across many rescans (every 0.2 s): after the first 20 it must stay flat (a leak
    would grow with every rescan)."""

    def measure(pid: int) -> dict[str, Any]:
        _, rss_first = _proc_cpu_rss(pid)
        time.sleep(20 * 0.2)
        _, rss_warm = _proc_cpu_rss(pid)
        time.sleep((rescans - 20) * 0.2)
        _, rss_end = _proc_cpu_rss(pid)
        return {"rescans": rescans, "rss_first": rss_first, "rss_warm": rss_warm,
                "rss_end": rss_end}  # fmt: skip

    return _idle_agent(root / "plateau", "0.2", measure, functions)


def _ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Node agent (device plugin)",
        "",
        f"Generated by `python benches/run_k8s_bench.py{' --quick' if args.quick else ''}"
        f"{' --real-uevents' if args.real_uevents else ''} --duration {args.duration:g}` on "
        f"{datetime.date.today()}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; gRPC over unix sockets, the fake kubelet as the client.",
        "",
    ]
    a = results["allocate"]
    lines += [
        f"## Allocate ({a['units']} units)",
        "",
        "| pattern | Allocate p50 | p99 | no-op call p50 | p99 | ratio p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (("sequential", "one at a time"), ("concurrent", "100 at once")):
        alloc, noop = a[key]
        lines.append(
            f"| {label} (n={alloc['n']}) | {_ms(alloc['p50'])} | {_ms(alloc['p99'])} | "
            f"{_ms(noop['p50'])} | {_ms(noop['p99'])} | {alloc['p99'] / noop['p99']:.2f} |"
        )
    p = results["preferred"]
    lines += [
        "",
        f"## GetPreferredAllocation ({p['units']} units: 2 NUMA nodes x 2 switches x 4)",
        "",
        "| call | p50 | p99 |",
        "| --- | ---: | ---: |",
        f"| GetPreferredAllocation (n={p['preferred']['n']}) | {_ms(p['preferred']['p50'])} | "
        f"{_ms(p['preferred']['p99'])} |",
        f"| no-op call | {_ms(p['noop']['p50'])} | {_ms(p['noop']['p99'])} |",
        f"| ratio | {p['preferred']['p50'] / p['noop']['p50']:.2f} | "
        f"{p['preferred']['p99'] / p['noop']['p99']:.2f} |",
    ]
    h = results["health"]
    lines += ["", f"## Health change to ListAndWatch (sample host, {h['source']})", ""]
    if h["latency"]:
        lat = h["latency"]
        lines += [
            "| flips | lost | p50 | p99 | max | one rescan p50 | p50 / rescan |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {h['flips']} | {h['lost']} | {_ms(lat['p50'])} | {_ms(lat['p99'])} | "
            f"{_ms(lat['max'])} | {_ms(h['rescan']['p50'])} | "
            f"{lat['p50'] / h['rescan']['p50']:.2f} |",
        ]
    r = results["reregistration"]
    lines += [
        "",
        f"## Re-registration after a kubelet restart (n={r['n']})",
        "",
        f"New `kubelet.sock` to the plugin's new registration: p50 {_ms(r['p50'])}, "
        f"max {_ms(r['max'])} (the agent checks the directory twice a second).",
    ]
    i = results["idle"]
    lines += [
        "",
        f"## Idle ({i['functions']} functions, {i['units']} units, default 30 s rescan, "
        f"{i['duration']:.0f} s)",
        "",
        "| CPU (share of one core) | RSS at start | RSS growth |",
        "| ---: | ---: | ---: |",
        f"| {i['cpu_share'] * 100:.3f}% | {i['rss_start'] / 2**20:.1f} MiB | "
        f"{i['rss_growth'] / 2**20:+.2f} MiB |",
        "",
    ]
    q = results["plateau"]
    lines += [
        f"RSS across {q['rescans']} rescans 0.2 s apart (the same host): "
        f"{q['rss_first'] / 2**20:.1f} MiB at registration, {q['rss_warm'] / 2**20:.1f} MiB "
        f"after 20 rescans, {q['rss_end'] / 2**20:.1f} MiB after {q['rescans']} "
        f"({(q['rss_end'] - q['rss_warm']) / 2**20:+.2f} MiB after the first 20).",
        "",
        "Targets (issue 10): Allocate p99 <= 5 ms with 64 units and 100 concurrent calls; "
        "idle CPU < 0.5% of a core, RSS growth < 5 MB.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, a 20 s idle run")
    parser.add_argument("--duration", type=float, default=None, help="idle run (default 600 s)")
    parser.add_argument("--real-uevents", action="store_true", help="real kernel uevents")
    parser.add_argument("--output", default=None, help="write the Markdown report here")
    parser.add_argument("--results", help="add the run's summary figures to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="CI: every path once, 1 s idle")
    args = parser.parse_args()
    counts = SMOKE if args.smoke else QUICK if args.quick else Counts()
    if args.duration is None:
        args.duration = 1.0 if args.smoke else 20.0 if args.quick else 600.0
    with tempfile.TemporaryDirectory(prefix="kata-vfio-k8s-bench-") as tmp:
        root = Path(tmp)
        results = {
            "allocate": measure_allocate(root / "a", counts),
            "preferred": measure_preferred(root / "p", counts),
            "health": measure_health(root / "h", counts, args.real_uevents),
            "reregistration": measure_reregistration(root / "r", counts),
            "idle": measure_idle(root / "i", args.duration, counts.settle, counts.idle_functions),
            "plateau": measure_plateau(root / "q", counts.plateau, counts.idle_functions),
        }
    text = report(results, args)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    if args.results:
        record_run(Path(args.results), "k8s", summary(results))
    return 0


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the README quotes (tools/figures.py renders them): milliseconds, ratios
    taken here (each run's own), the idle share in percent of a core and MiB."""
    a, p, h = results["allocate"], results["preferred"], results["health"]
    figures: dict[str, Any] = {"units": a["units"], "preferred_units": p["units"]}
    for key, label in (("sequential", "one"), ("concurrent", "burst")):
        alloc, noop = a[key]
        figures[f"allocate_{label}"] = {
            "p50_ms": alloc["p50"] * 1e3,
            "p99_ms": alloc["p99"] * 1e3,
            "noop_p50_ms": noop["p50"] * 1e3,
            "noop_p99_ms": noop["p99"] * 1e3,
            "p99_over_noop": alloc["p99"] / noop["p99"],
        }
    figures["preferred"] = {
        "p50_ms": p["preferred"]["p50"] * 1e3,
        "p99_ms": p["preferred"]["p99"] * 1e3,
        "p50_over_noop": p["preferred"]["p50"] / p["noop"]["p50"],
        "p99_over_noop": p["preferred"]["p99"] / p["noop"]["p99"],
    }
    if h["latency"]:
        figures["health"] = {
            "source": h["source"],
            "flips": h["flips"],
            "lost": h["lost"],
            "p50_ms": h["latency"]["p50"] * 1e3,
            "p99_ms": h["latency"]["p99"] * 1e3,
            "rescan_ms": h["rescan"]["p50"] * 1e3,
        }
    r, i, q = results["reregistration"], results["idle"], results["plateau"]
    figures["reregistration"] = {"p50_ms": r["p50"] * 1e3, "max_ms": r["max"] * 1e3}
    figures["idle"] = {
        "functions": i["functions"],
        "minutes": i["duration"] / 60,
        "cpu_percent": i["cpu_share"] * 100,
        "rss_growth_mib": i["rss_growth"] / 2**20,
        "plateau_rescans": q["rescans"] - 20,
        "plateau_growth_mib": (q["rss_end"] - q["rss_warm"]) / 2**20,
    }
    return figures


if __name__ == "__main__":
    print(f"kata_vfio {kata_vfio.__version__}", file=sys.stderr)
    sys.exit(main())
