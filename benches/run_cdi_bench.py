"""CDI benchmarks, reported as ratios against baselines measured in the same run.

    python benches/run_cdi_bench.py [--quick] [--output benches/CDI-RESULTS.md]
        [--results benches/results/cdi.json]

``--results`` adds the run's summary figures to that file (``tools/figures.py`` renders them
into the README); ``--smoke`` (CI) measures a tiny corpus once: it proves the runner works, its
figures mean nothing.

Measures, on 100 spec files holding 10,000 devices (nvidia-ctk-shaped: two device nodes per
device, spec-level env, hooks and mounts):

* a full registry load, YAML and JSON, against merely parsing the same files (libyaml's plain
  loader, ``json.loads``): the price of strictness, validation and the device index;
* a refresh with nothing changed, against the full load (target: under 2%);
* injecting 8 devices into a typical OCI spec, against deep-copying that spec;
* injecting 20,000 device nodes (half of them replacing entries the OCI spec already has)
  against injecting 2,000 the same way: 10x the work, so a ratio near 10 is linear (the
  list scans this replaced made it 100; allocator and garbage-collector effects put a linear
  run somewhat above 10);
* the strict YAML loader on libyaml's parser against the same loader on PyYAML's pure-Python
  parser.

Each figure is the median of several rounds; in every round the measured action and its
baseline run back to back, and the ratio reported is the median of the per-round ratios, so a
change in the machine's load hits both sides alike.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kata_vfio.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    HostDevice,
    HostDeviceTable,
    Mount,
    Registry,
    Spec,
    dump_spec,
    inject_edits,
)
from kata_vfio.cdi import registry as registry_module
from kata_vfio.cdi.yamlgo import HAS_LIBYAML, load_yaml

# The shared data is found as the tests find it (beside the checkout or a folder above).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from shared_paths import SHARED_DATA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import record_run

FILES = 100
DEVICES_PER_FILE = 100
INJECTED = 8
MANY_NODES = 20_000
SCALE = 10
# A typical OCI spec: the runtime-spec project's own example (process, mounts, hooks, linux).
OCI_EXAMPLE = SHARED_DATA / "oci-bundles/runtime-spec/schema/test/config/good/spec-example.json"


def corpus_spec(file_index: int, devices: int = DEVICES_PER_FILE) -> Spec:
    """One vendor's spec, shaped like ``nvidia-ctk cdi generate`` output."""
    driver = "/run/nvidia/driver"
    return Spec(
        "0.5.0",
        f"vendor{file_index}.example.com/gpu",
        tuple(
            Device(
                str(i),
                ContainerEdits(
                    device_nodes=(
                        DeviceNode(f"/dev/nvidia{i}", host_path=f"{driver}/dev/nvidia{i}"),
                        DeviceNode(f"/dev/dri/card{i}", host_path=f"{driver}/dev/dri/card{i}"),
                    )
                ),
            )
            for i in range(devices)
        ),
        ContainerEdits(
            env=("NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_CTK_LIBCUDA_DIR=/lib/x86_64-linux-gnu"),
            device_nodes=(DeviceNode("/dev/nvidiactl", host_path=f"{driver}/dev/nvidiactl"),),
            hooks=tuple(
                Hook(
                    "createContainer",
                    "/usr/bin/nvidia-cdi-hook",
                    args=("nvidia-cdi-hook", sub, "--folder", "/lib/x86_64-linux-gnu"),
                    env=("NVIDIA_CTK_DEBUG=false",),
                )
                for sub in ("create-symlinks", "update-ldcache", "enable-cuda-compat")
            ),
            mounts=tuple(
                Mount(
                    f"{driver}/lib/x86_64-linux-gnu/{lib}",
                    f"/lib/x86_64-linux-gnu/{lib}",
                    options=("ro", "nosuid", "nodev", "rbind", "rprivate"),
                )
                for lib in ("libcuda.so.550.54.15", "libnvidia-ml.so.550.54.15")
            ),
        ),
    )


def write_corpus(
    directory: Path, fmt: str, files: int = FILES, devices: int = DEVICES_PER_FILE
) -> None:
    """``files`` spec files of ``devices`` devices each, in YAML or JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        spec = corpus_spec(index, devices)
        (directory / f"vendor{index}.example.com-gpu.{fmt}").write_bytes(dump_spec(spec, fmt))  # type: ignore[arg-type]


def injection_setup(directory: Path) -> tuple[Registry, dict[str, Any], list[str]]:
    """A registry with one spec of 8 GPUs and the host nodes they need, a typical OCI spec, and
    the 8 names to inject."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = corpus_spec(0, INJECTED)
    (directory / "gpu.yaml").write_bytes(dump_spec(spec))
    nodes = {"/run/nvidia/driver/dev/nvidiactl": HostDevice("c", 195, 255, 0o666)}
    for i in range(INJECTED):
        nodes[f"/run/nvidia/driver/dev/nvidia{i}"] = HostDevice("c", 195, i, 0o666)
        nodes[f"/run/nvidia/driver/dev/dri/card{i}"] = HostDevice("c", 226, i, 0o660)
    registry = Registry([directory], device_lookup=HostDeviceTable(nodes))
    if OCI_EXAMPLE.exists():
        oci = json.loads(OCI_EXAMPLE.read_text())
    else:
        oci = {"ociVersion": "1.2.0", "process": {"env": ["PATH=/bin"], "cwd": "/"}, "mounts": []}
    names = [f"{spec.kind}={i}" for i in range(INJECTED)]
    return registry, oci, names


def many_nodes_setup(count: int) -> tuple[dict[str, Any], list[ContainerEdits], HostDeviceTable]:
    """An OCI spec holding ``count // 2`` device entries, edits adding ``count`` nodes (every
    other one on a path the spec already has) and a host table that has them all."""
    oci = {
        "ociVersion": "1.2.0",
        "linux": {
            "devices": [
                {"path": f"/dev/n{i}", "type": "c", "major": 1, "minor": i % 256}
                for i in range(0, count, 2)
            ]
        },
    }
    nodes = tuple(DeviceNode(f"/dev/n{i}") for i in range(count))
    host = HostDeviceTable({f"/dev/n{i}": HostDevice("c", 2, i % 256, 0o660) for i in range(count)})
    return oci, [ContainerEdits(device_nodes=nodes)], host


def inject_many(oci: dict[str, Any], edits: list[ContainerEdits], host: HostDeviceTable) -> int:
    """Injects ``edits`` completing the nodes from ``host``; the device count afterwards."""
    return len(inject_edits(oci, edits, lookup=host).spec["linux"]["devices"])


def seconds(action: Callable[[], object], times: int = 1) -> float:
    """Mean wall time of ``times`` calls, taken together."""
    start = time.perf_counter()
    for _ in range(times):
        action()
    return (time.perf_counter() - start) / times


def paired(
    measured: Callable[[], object],
    baseline: Callable[[], object],
    repeat: int,
    times: int = 1,
) -> tuple[float, float, float]:
    """Medians of ``measured`` and ``baseline`` and of their per-pair ratio, the two timed
    back to back in each round so that a change in the machine's load hits both alike."""
    measured()
    baseline()
    pairs = [(seconds(measured, times), seconds(baseline, times)) for _ in range(repeat)]
    return (
        statistics.median(m for m, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(m / b for m, b in pairs),
    )


def full_load(directory: Path) -> Registry:
    registry = Registry([directory])
    report = registry.refresh()
    if len(registry.device_names()) != FILES * DEVICES_PER_FILE or report.errors:
        raise SystemExit(f"corpus did not load: {dict(report.errors)}")
    return registry


def parse_only(directory: Path, fmt: str) -> None:
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        if fmt == "json":
            json.loads(data)
        else:
            yaml.load(data, Loader=yaml.CSafeLoader if HAS_LIBYAML else yaml.SafeLoader)


def strict_yaml_parse(directory: Path, pure_python: bool) -> None:
    for path in sorted(directory.iterdir()):
        load_yaml(path.read_bytes(), pure_python=pure_python)


def measure(quick: bool, smoke: bool = False) -> dict[str, Any]:
    repeat = 1 if smoke else 3 if quick else 5
    results: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fmt in ("yaml", "json"):
            directory = root / fmt
            write_corpus(directory, fmt, FILES, DEVICES_PER_FILE)
            load, parse, ratio = paired(
                lambda d=directory: full_load(d),
                lambda d=directory, f=fmt: parse_only(d, f),
                repeat,
            )
            results[fmt] = {
                "bytes": sum(p.stat().st_size for p in directory.iterdir()),
                "full_load_s": load,
                "parse_only_s": parse,
                "load_ratio": ratio,
            }
        # Let the files age past the registry's racy window, as files do on a real host.
        time.sleep(registry_module._RACY_WINDOW_NS / 1e9 + 0.5)
        for fmt in ("yaml", "json"):
            registry = full_load(root / fmt)
            report = registry.refresh()
            if report.unchanged != FILES or report.changed or report.added:
                raise SystemExit(f"refresh re-read files: {report}")
            refresh, load, ratio = paired(
                registry.refresh, lambda d=root / fmt: full_load(d), repeat, times=1
            )
            results[fmt].update(refresh_unchanged_s=refresh, refresh_ratio=ratio)
        registry, oci, names = injection_setup(root / "inject")
        registry.refresh()
        inject, deepcopy, ratio = paired(
            lambda: registry.inject(oci, names), lambda: copy.deepcopy(oci), repeat * 5, times=100
        )
        results["inject"] = {
            "inject_s": inject,
            "deepcopy_s": deepcopy,
            "ratio": ratio,
            "devices": len(registry.inject(oci, names).spec["linux"]["devices"]),
        }
        many, few = many_nodes_setup(MANY_NODES), many_nodes_setup(MANY_NODES // SCALE)
        big, small, ratio = paired(lambda: inject_many(*many), lambda: inject_many(*few), repeat)
        results["many_nodes"] = {"big_s": big, "small_s": small, "ratio": ratio}
        yaml_dir = root / "yaml"
        libyaml, pure, ratio = paired(
            lambda: strict_yaml_parse(yaml_dir, False),
            lambda: strict_yaml_parse(yaml_dir, True),
            1 if quick or smoke else 2,
        )
        results["loader"] = {"libyaml_s": libyaml, "pure_python_s": pure, "ratio": ratio}
    results["load_after"] = os.getloadavg()[0]
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "# CDI benchmark results",
        "",
        f"Measured {datetime.date.today().isoformat()} by `python benches/run_cdi_bench.py` on "
        f"{os.cpu_count()} CPU(s) ({platform.machine()}, {_cpu_model()}), Python "
        f"{platform.python_version()}, PyYAML {yaml.__version__} "
        f"({'with' if HAS_LIBYAML else 'without'} libyaml). The machine is shared (load average "
        f"{results['load_before']:.1f} at the start, {results['load_after']:.1f} at the end), so "
        "absolute times are noisy; each ratio is the median of per-round ratios, the two sides "
        "timed back to back in every round.",
        "",
        f"Corpus: {FILES} spec files, {FILES * DEVICES_PER_FILE} devices "
        "(nvidia-ctk-shaped: two device nodes per device; spec-level env, 3 hooks, 2 mounts).",
        "",
        "| measurement | baseline (same run) | time | baseline time | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fmt in ("yaml", "json"):
        r = results[fmt]
        lines.append(
            f"| registry full load, {fmt.upper()} ({r['bytes'] / 1e6:.1f} MB) | parse only "
            f"({'libyaml plain load' if fmt == 'yaml' else 'json.loads'}) | "
            f"{r['full_load_s'] * 1e3:.0f} ms | {r['parse_only_s'] * 1e3:.0f} ms | "
            f"{r['load_ratio']:.2f}x |"
        )
    for fmt in ("yaml", "json"):
        r = results[fmt]
        lines.append(
            f"| refresh, nothing changed, {fmt.upper()} | full load | "
            f"{r['refresh_unchanged_s'] * 1e3:.2f} ms | {r['full_load_s'] * 1e3:.0f} ms | "
            f"{100 * r['refresh_ratio']:.3f}% (target < 2%) |"
        )
    inject = results["inject"]
    lines.append(
        f"| inject {INJECTED} devices into the runtime-spec example ({inject['devices']} nodes "
        f"added) | deepcopy of that spec | {inject['inject_s'] * 1e6:.0f} µs | "
        f"{inject['deepcopy_s'] * 1e6:.0f} µs | {inject['ratio']:.1f}x |"
    )
    many = results["many_nodes"]
    lines.append(
        f"| inject {MANY_NODES:,} device nodes (half replace existing entries) | the same with "
        f"{MANY_NODES // SCALE:,} | {many['big_s'] * 1e3:.0f} ms | {many['small_s'] * 1e3:.0f} ms "
        f"| {many['ratio']:.1f}x for {SCALE}x the nodes (linear: ~{SCALE}, quadratic: "
        f"~{SCALE * SCALE}) |"
    )
    loader = results["loader"]
    lines.append(
        f"| strict YAML loader on libyaml | same loader, pure-Python parser | "
        f"{loader['libyaml_s'] * 1e3:.0f} ms | {loader['pure_python_s'] * 1e3:.0f} ms | "
        f"{loader['ratio']:.2f}x ({1 / loader['ratio']:.1f}x faster) |"
    )
    lines += [
        "",
        "Notes:",
        "",
        "- A full load reads, parses (YAML through the go-yaml-faithful loader, JSON through "
        "`json.loads` first), converts to immutable records, validates every rule and indexes "
        "the devices; the baseline only parses.",
        "- Refresh lists the directories and compares each file's identity, size and timestamps "
        "with the parse it holds; unchanged files are not read. Files modified in the 2 seconds "
        "before they were last read are re-read (coarse filesystem timestamps), so the corpus is "
        "left to age that long before the refresh is measured.",
        "- Injection includes resolving the names, completing the device nodes through the host "
        "lookup (a table here, so the figure does not depend on this machine's /dev), deep-copying "
        "the OCI spec and applying every edit; the input spec is never changed.",
        "",
    ]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--output", help="write the Markdown report here")
    parser.add_argument("--results", help="add the run's summary figures to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="CI: a tiny corpus, one round")
    args = parser.parse_args(argv)
    if args.smoke:
        global FILES, DEVICES_PER_FILE, MANY_NODES
        FILES, DEVICES_PER_FILE, MANY_NODES = 4, 10, 2_000
    results = measure(args.quick, args.smoke)
    text = report(results)
    print(text)
    print(json.dumps(results, indent=2), file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
    if args.results:
        record_run(Path(args.results), "cdi", summary(results))
    return 0


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the README quotes (tools/figures.py renders them)."""
    return {
        "files": FILES,
        "devices": FILES * DEVICES_PER_FILE,
        "refresh_over_load_yaml": results["yaml"]["refresh_ratio"],
        "refresh_over_load_json": results["json"]["refresh_ratio"],
        "inject_over_deepcopy": results["inject"]["ratio"],
        "injected": INJECTED,
        "many_nodes": MANY_NODES,
        "many_over_few": results["many_nodes"]["ratio"],
    }


if __name__ == "__main__":
    sys.exit(main())
