"""The seed scenario end to end, the way a Kata pod lives it, on the lab guest (L1).

The lab's e1000e functions stand in for GPUs (the NIC alone in its group, the one behind the
switch, the two-function group). For each scenario, through the project's command line only:
``cdi generate`` writes the spec, ``sandbox plan --write`` plans the sandbox from a bundle
(``cdi.k8s.io/`` annotations, or what a fake kubelet's Pod Resources API allocated) and a
Kata configuration, ``qemu run`` starts the planned VM (L2, TCG) with the devices, ``sandbox
container --write`` plans a workload container asking for the same devices, and ``qemu
hotplug`` / ``unplug`` change a running L2. Inside L2, guest/seed-init plays the Kata agent
with nothing of the project: it resolves each descriptor's guest PCI path bridge by bridge in
its own sysfs, reads the IDs there, numbers the functions of the kind in guest PCI order, and
in vfio mode rebinds them to vfio-pci. Facts per scenario: each stage with its time and
error (the first failing stage ends the scenario), what each step printed, what L2 saw, and
the time from ``sandbox plan`` to L2 seeing all devices (plan, QEMU start, guest boot).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from guestlib import bound
from kvlab import topology

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "k8s"))

from fake_podresources import Container, FakePodResources  # noqa: E402

KIND = "lab.kata-vfio.io/nic"
# Ethernet controllers of Intel (the e1000e functions) are the guest kind of this lab.
KIND_VENDOR, KIND_CLASS = "0x8086", "0x0200"
GUEST_KIND = f"8086:0200={KIND}"
GROUPS = {"single": (topology.NIC_SINGLE,), "switch": (topology.NIC_SWITCH,)}
GROUPS["multifunction"] = topology.NIC_MULTI
GROUPS["numa"] = (topology.NIC_NUMA,)
POD = ("seed", "seed-pod")
MEMORY_MIB = 256  # Kata's minimum
BOOT_TIMEOUT_S = 600.0  # TCG inside TCG on a busy 2-core host
STEP_TIMEOUT_S = 300.0
HOTPLUG_WAIT_S = 180


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One sandbox: its Kata configuration, where its devices come from, what is plugged."""

    name: str
    cold_plug: str
    vfio_mode: str
    iommu: bool
    groups: tuple[str, ...]
    source: str  # "annotations", "podresources" or "none"
    hotplug: str | None = None
    ports: int = 4
    numa: bool = False


SCENARIOS = (
    # The same VM as "root-port" without devices: the baseline of the timing.
    Scenario("baseline", "root-port", "guest-kernel", False, (), "none"),
    Scenario(
        "root-port",
        "root-port",
        "guest-kernel",
        False,
        ("single", "multifunction"),
        "annotations",
        hotplug="switch",
    ),
    # Not the two-function group: behind QEMU's vIOMMU each guest function has its own
    # address space, and one host group cannot be attached to two (QEMU refuses: "error
    # attach ... Invalid argument" with iommufd, "used in multiple address spaces" legacy).
    Scenario("switch-port", "switch-port", "vfio", True, ("single", "switch"), "podresources"),
    # L1's NIC on NUMA node 1 (behind L1's expander) goes to an expander of its own in L2.
    Scenario(
        "numa", "root-port", "guest-kernel", False, ("single", "numa"), "annotations", numa=True
    ),
)
# The group the planner must refuse behind a vIOMMU (two functions, one group), and the
# configuration that asks for it.
REFUSED = Scenario("viommu-refusal", "root-port", "vfio", True, ("multifunction",), "annotations")


class StageError(Exception):
    """A stage failed; the message says what was seen."""


# --- the project's command line -------------------------------------------------------


def kata_vfio(*args: str, timeout: float = STEP_TIMEOUT_S) -> tuple[str, float]:
    """Runs ``kata-vfio ARGS``; returns its stdout and wall time, raises on a failure."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kata_vfio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    took = time.monotonic() - started
    if done.returncode != 0:
        raise StageError(
            f"kata-vfio {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-1500:]}"
        )
    return done.stdout, took


def kata_vfio_json(*args: str) -> tuple[Any, float]:
    out, took = kata_vfio(*args, "--json")
    return json.loads(out), took


# --- the host's own view (sysfs, not the project) --------------------------------------


def sysfs_ids(bdf: str) -> tuple[str, str]:
    base = Path("/sys/bus/pci/devices") / bdf
    return (base / "vendor").read_text().strip(), (base / "device").read_text().strip()


def vfio_node(bdf: str, cdev: bool) -> str:
    """The VFIO node of ``bdf``: its cdev, or its group's node."""
    base = Path("/sys/bus/pci/devices") / bdf
    if cdev:
        (name,) = os.listdir(base / "vfio-dev")
        return f"/dev/vfio/devices/{name}"
    return f"/dev/vfio/{os.readlink(base / 'iommu_group').rsplit('/', 1)[-1]}"


def qmp_call(socket_path: str, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One QMP command over a fresh connection (a plain socket, not the project's client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(socket_path)
        reader = sock.makefile("r")
        json.loads(reader.readline())  # greeting
        for message in ({"execute": "qmp_capabilities"}, {"execute": command}):
            if message["execute"] == command and arguments:
                message["arguments"] = arguments
            sock.sendall(json.dumps(message).encode() + b"\n")
            while True:
                reply = json.loads(reader.readline())
                if "return" in reply or "error" in reply:
                    break
        if "error" in reply:
            raise StageError(f"QMP {command}: {reply['error']}")
        return reply["return"]


# --- L2's console ------------------------------------------------------------------------


class Console:
    """The L2 serial console (the plan's console socket): seed-init's JSON lines in, requests
    out."""

    def __init__(self, path: str) -> None:
        deadline = time.monotonic() + 30
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buffer = b""
        self.lines: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def hello(self, attempts: int = 10) -> None:
        """Says HELLO until seed-init answers: its first read has a timeout, and one that
        expires mid-line loses the start of the line."""
        for _ in range(attempts):
            self.send("HELLO")
            with contextlib.suppress(StageError):
                self.expect("hello", 10)
                return
        raise StageError(f"L2 never answered HELLO ({attempts} tries)")

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next ``SEED`` event called ``event`` (earlier other events are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                self.lines.append(line)
                if line.startswith("SEED {"):
                    message: dict[str, Any] = json.loads(line[5:])
                    if message.get("event") == event:
                        message["received"] = time.monotonic()
                        return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise StageError(f"L2 never reported {event!r} within {timeout:.0f} s")
            ready, _, _ = select.select([self.sock], [], [], min(left, 1.0))
            if ready:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise StageError(f"L2's console closed before {event!r}")
                self.buffer += chunk


# --- the VM: `kata-vfio qemu run` --------------------------------------------------------


class RunningVm:
    """``kata-vfio qemu run`` in the background, up to the document it prints once QEMU runs."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kata_vfio", "qemu", "run", *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            start_new_session=True,  # QEMU goes with it if all else fails
        )
        self.document = self._read_document()
        self.running = time.monotonic()

    def _read_document(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()  # raw reads: select() knows nothing of a buffer
        text = b""
        deadline = time.monotonic() + 2 * STEP_TIMEOUT_S  # past qemu run's own start timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                if self.process.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk
            with contextlib.suppress(ValueError):
                document: dict[str, Any] = json.loads(text)
                return document
        raise StageError(f"qemu run printed no start document ({text!r}): {self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.is_file() else ""

    def finish(self, timeout: float) -> int | None:
        """Waits for the exit (the guest powered off); stops it softly, then hard. QEMU is
        gone afterwards whatever happened (it holds the devices the lab must restore)."""
        code = None
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
            try:
                code = self.process.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        qemu = self.document.get("pid") if hasattr(self, "document") else None
        if isinstance(qemu, int):
            _kill_and_reap(qemu)
        return code


def _kill_and_reap(pid: int) -> None:
    """SIGKILL ``pid`` (not ours to wait for) and wait until the kernel has let it go."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


# --- one scenario ------------------------------------------------------------------------


class Stages:
    """The stages of one scenario: each timed, the first failure recorded and fatal."""

    def __init__(self, facts: dict[str, Any], label: str) -> None:
        self.facts = facts
        self.label = label
        facts["stages"] = []
        facts["failed_stage"] = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        entry: dict[str, Any] = {"name": name, "ok": False}
        self.facts["stages"].append(entry)
        started = time.monotonic()
        try:
            yield
            entry["ok"] = True
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            self.facts["failed_stage"] = name
            raise
        finally:
            entry["seconds"] = round(time.monotonic() - started, 2)
            # Progress on the lab console: a slow nested boot is otherwise silent for minutes.
            state = "ok" if entry["ok"] else "FAILED"
            print(f"KVLAB-SEED {self.label} {name} {state} {entry['seconds']}s", flush=True)
            _save_progress(self.label, self.facts)


def _save_progress(label: str, facts: dict[str, Any]) -> None:
    """The facts so far, in the lab's results share: a boot that dies still tells."""
    out = os.environ.get("KVLAB_OUT")
    if out:
        with contextlib.suppress(OSError, TypeError, ValueError):
            Path(out, f"seed-{label}.json").write_text(json.dumps(facts, indent=1))


def _config(scenario: Scenario, context: dict[str, Any], work: Path) -> Path:
    ports = "pcie_switch_port" if scenario.cold_plug == "switch-port" else "pcie_root_port"
    text = f"""
[hypervisor.qemu]
path = "{shutil.which("qemu-system-x86_64")}"
kernel = "{context["inner_kernel"]}"
initrd = "{context["seed_initrd"]}"
kernel_params = "panic=-1 quiet"
machine_type = "q35"
default_memory = {MEMORY_MIB}
default_vcpus = 1
cold_plug_vfio = "{scenario.cold_plug}"
hot_plug_vfio = "no-port"
{ports} = {scenario.ports}
enable_iommu = {str(scenario.iommu).lower()}
enable_numa = {str(scenario.numa).lower()}

[runtime]
vfio_mode = "{scenario.vfio_mode}"
"""
    path = work / "configuration.toml"
    path.write_text(text)
    return path


def _bundle(path: Path, annotations: dict[str, str], args: list[str]) -> Path:
    path.mkdir()
    spec = {
        "ociVersion": "1.1.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/"},
        "root": {"path": "rootfs"},
        "annotations": {
            "io.kubernetes.cri.sandbox-id": "seed0123456789abcdef",
            "io.kubernetes.cri.sandbox-name": POD[1],
            "io.kubernetes.cri.sandbox-namespace": POD[0],
            **annotations,
        },
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}},
    }
    (path / "config.json").write_text(json.dumps(spec, indent=1))
    return path


def _requested_names(scenario: Scenario, names: dict[str, str], cdev: bool) -> list[str]:
    """The CDI names of the scenario's groups (a cdev spec names each function)."""
    bdfs = [b for g in scenario.groups for b in GROUPS[g]]
    nodes = list(dict.fromkeys(vfio_node(b, cdev) for b in bdfs))
    return [names[node] for node in nodes]


def _plan_facts(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_source": plan["device_source"],
        "cdi_devices": plan["cdi_devices"],
        "annotations_removed": plan["annotations_removed"],
        "annotations_left": sorted(plan["spec"].get("annotations", {})),
        "topology": plan["topology"]["kind"],
        "free_ports": [p["id"] for p in plan["ports"] if p["free"]],
        "functions": [
            {k: f[k] for k in ("bdf", "vendor", "device", "kind", "port", "guest_pci_path")}
            for d in plan["devices"]
            for f in d["functions"]
        ],
        "iommu": "intel-iommu" in " ".join(plan["qemu_argv"]),
        "expanders": plan["topology"]["expanders"],
        "ports": {p["id"]: {"bus": p["bus"], "path": p["guest_pci_path"]} for p in plan["ports"]},
        "numa_argv": [
            plan["qemu_argv"][i + 1] for i, w in enumerate(plan["qemu_argv"]) if w == "-numa"
        ],
    }


def _scenario(
    scenario: Scenario, context: dict[str, Any], spec_dir: str, names: dict[str, str]
) -> dict[str, Any]:
    cdev = context["cdev"]
    facts: dict[str, Any] = {"config": dataclasses.asdict(scenario)}
    stages = Stages(facts, scenario.name)
    work = Path(tempfile.mkdtemp(prefix=f"kvseed-{scenario.name}-"))
    runtime_dir = f"/run/kvseed-{scenario.name}"
    config = _config(scenario, context, work)
    requested = _requested_names(scenario, names, cdev)
    facts["requested"] = requested
    common = ["--config", str(config), "--spec-dir", spec_dir, "--runtime-dir", runtime_dir]
    common += ["--accel", "tcg", "--guest-kind", GUEST_KIND]
    vm: RunningVm | None = None
    console: Console | None = None
    server: FakePodResources | None = None
    timing: dict[str, float] = {}
    facts["timing"] = timing
    try:
        annotations = {"io.kubernetes.cri.container-type": "sandbox"}
        plan_args: list[str] = []
        if scenario.source == "annotations":
            annotations["cdi.k8s.io/seed"] = ",".join(requested)
        if scenario.source == "podresources":
            with stages.stage("podresources"):
                socket_path = str(work / "kubelet.sock")
                server = FakePodResources(socket_path).start()
                ids = [name.split("=", 1)[1] for name in requested]
                server.pods[POD] = [Container("workload", devices={KIND: ids})]
                plan_args = ["--pod-resources", socket_path]
        sandbox = _bundle(work / "sandbox", annotations, ["/pause"])
        with stages.stage("plan"):
            started = time.monotonic()
            plan, timing["plan_s"] = kata_vfio_json(
                "sandbox", "plan", "--bundle", str(sandbox), *common, *plan_args, "--write"
            )
            t_plan = started
            (work / "plan.json").write_text(json.dumps(plan))
            facts["plan"] = _plan_facts(plan)
            facts["written_annotations"] = sorted(
                json.loads((sandbox / "config.json").read_text())["annotations"]
            )
            if server is not None:
                facts["kubelet_calls"] = list(server.calls)
        # QEMU pins all of L2's memory for VFIO before QMP answers: slow under TCG.
        launch = ["--bundle", str(sandbox), "--start-timeout", str(STEP_TIMEOUT_S), *common]
        with stages.stage("launch"):
            vm = RunningVm(launch, work / "qemu-run.log")
            timing["qemu_start_s"] = vm.running - vm.started
            facts["launch"] = vm.document
            console = Console(f"{runtime_dir}/console.sock")
        with stages.stage("guest-boot"):
            try:
                boot = console.expect("boot", BOOT_TIMEOUT_S)
                timing["to_devices_s"] = boot["received"] - t_plan
            except StageError as first:
                oops = _panic(console.lines)
                if not oops:
                    raise
                # L2's kernel died before its init ran (seen in 2 of 16 TCG-in-TCG boots, one
                # NULL dereference in an interrupt at the same address): keep its oops, boot
                # once more.
                facts["boot_retry"] = {"error": str(first), "oops": oops}
                console.close()
                vm.finish(60)
                shutil.rmtree(runtime_dir, ignore_errors=True)
                vm = RunningVm(launch, work / "qemu-run-2.log")
                timing["qemu_start_s"] = vm.running - vm.started
                console = Console(f"{runtime_dir}/console.sock")
                boot = console.expect("boot", BOOT_TIMEOUT_S)
                timing["to_devices_s"] = timing["plan_s"] + boot["received"] - vm.started
            timing["guest_boot_s"] = boot["received"] - vm.running
            timing["l2_uptime_s"] = boot["uptime"]
            console.hello()
            facts["boot_pci"] = boot["pci"]
            wanted = len(facts["plan"]["functions"])
            seen = [f for f in boot["pci"] if f["class"].startswith(KIND_CLASS)]
            if len(seen) != wanted:
                raise StageError(f"L2 booted with {len(seen)} of the {wanted} planned functions")
        if not scenario.groups:
            return facts
        with stages.stage("resolve"):
            container = _bundle(work / "container", {}, ["/workload"])
            _ask_for_devices(container, scenario, requested, spec_dir)
            document, timing["container_plan_s"] = kata_vfio_json(
                "sandbox",
                "container",
                "--bundle",
                str(container),
                "--sandbox-plan",
                str(work / "plan.json"),
                "--write",
            )
            facts["container"] = {
                k: document[k]
                for k in ("annotations_added", "annotations_removed", "agent_devices")
            }
            facts["container"]["removed_devices"] = document["removed_devices"]
            facts["container"]["spec_devices"] = [
                d["path"] for d in document["spec"].get("linux", {}).get("devices", [])
            ]
            console.send(f"KIND {KIND_VENDOR} {KIND_CLASS}")
            console.expect("kind", STEP_TIMEOUT_S)
            facts["resolved"] = []
            for device in document["agent_devices"]:
                console.send(f"DEV {device['id']} {device['type']} {' '.join(device['options'])}")
                facts["resolved"].append(console.expect("device", STEP_TIMEOUT_S))
            _check_resolved(facts["resolved"], context["host_ids"])
        if scenario.vfio_mode == "guest-kernel":
            with stages.stage("index"):
                _check_indices(facts["resolved"], document["annotations_added"])
        if scenario.hotplug is not None:
            _hotplug(scenario, stages, facts, console, vm, cdev)
        return facts
    except Exception:
        return facts  # the stage recorded it
    finally:
        facts["console_tail"] = console.lines[-40:] if console is not None else []
        if console is not None:
            with contextlib.suppress(OSError):
                console.send("QUIT")
        if vm is not None:
            facts["qemu_run_rc"] = vm.finish(60)
            facts["qemu_run_stderr"] = vm.stderr()
        if console is not None:
            console.close()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _refusal(
    scenario: Scenario, context: dict[str, Any], spec_dir: str, names: dict[str, str]
) -> dict[str, Any]:
    """``sandbox plan`` of a two-function group behind a vIOMMU, on the real kernel's groups:
    refused before anything is written or started (exit status, message, the bundle)."""
    work = Path(tempfile.mkdtemp(prefix="kvseed-refusal-"))
    try:
        config = _config(scenario, context, work)
        requested = _requested_names(scenario, names, context["cdev"])
        sandbox = _bundle(work / "sandbox", {"cdi.k8s.io/seed": ",".join(requested)}, ["/pause"])
        before = (sandbox / "config.json").read_bytes()
        argv = ["sandbox", "plan", "--bundle", str(sandbox), "--config", str(config)]
        argv += ["--spec-dir", spec_dir, "--runtime-dir", f"/run/kvseed-{scenario.name}"]
        done = subprocess.run(
            [sys.executable, "-m", "kata_vfio", *argv, "--accel", "tcg", "--write"],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
        return {
            "requested": requested,
            "rc": done.returncode,
            "stderr": done.stderr[-2000:],
            "bundle_unchanged": (sandbox / "config.json").read_bytes() == before,
            "runtime_dir_made": Path(f"/run/kvseed-{scenario.name}").exists(),
        }
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _panic(lines: list[str]) -> list[str]:
    """The console from the first oops line on, when the guest kernel panicked (else [])."""
    if not any("Kernel panic" in line for line in lines):
        return []
    marks = ("BUG:", "Oops", "general protection", "Kernel panic")
    start = next(i for i, line in enumerate(lines) if any(m in line for m in marks))
    return lines[start : start + 80]


def _check_resolved(resolved: list[dict[str, Any]], host_ids: dict[str, Any]) -> None:
    """Every function at its path, with its host IDs; a device's functions on one slot."""
    for device in resolved:
        slots = set()
        for function in device["functions"]:
            if not function["guest_bdf"]:
                raise StageError(f"{device['id']}: {function['path']}: {function['why']}")
            ids = (function["vendor"], function["device"])
            if ids != tuple(host_ids[function["host"]]):
                raise StageError(
                    f"{device['id']}: {function['path']} is {ids}, the host function "
                    f"{function['host']} is {tuple(host_ids[function['host']])}"
                )
            slots.add(function["guest_bdf"].rsplit(".", 1)[0])
        if len(slots) != 1:
            raise StageError(f"{device['id']}: functions on several slots: {sorted(slots)}")


def _check_indices(resolved: list[dict[str, Any]], added: dict[str, str]) -> None:
    """``cdi.k8s.io/vfio<N>: kind=index,...`` names exactly the functions L2 numbers so."""
    for device in resolved:
        key = f"cdi.k8s.io/{device['id']}"
        if key not in added:
            raise StageError(f"no inner annotation {key} (added: {added})")
        annotated = sorted(int(v.split("=", 1)[1]) for v in added[key].split(","))
        kinds = {v.split("=", 1)[0] for v in added[key].split(",")}
        seen = sorted(f["kind_index"] for f in device["functions"])
        if kinds != {KIND} or annotated != seen:
            raise StageError(f"{key}: {added[key]}, but L2 numbers those functions {seen}")


def _ask_for_devices(
    container: Path, scenario: Scenario, requested: list[str], spec_dir: str
) -> None:
    """The container asks for the sandbox's devices; containerd's outer CDI injection puts
    their nodes in its spec (from the annotation, or from the kubelet's CDI names)."""
    inject = ["cdi", "--spec-dir", spec_dir, "inject", "--bundle", str(container)]
    if scenario.source == "annotations":
        spec = json.loads((container / "config.json").read_text())
        spec["annotations"]["cdi.k8s.io/seed"] = ",".join(requested)
        (container / "config.json").write_text(json.dumps(spec, indent=1))
        kata_vfio(*inject, "--from-annotations")
    else:
        kata_vfio(*inject, *(a for name in requested for a in ("--device", name)))


def _hotplug(
    scenario: Scenario,
    stages: Stages,
    facts: dict[str, Any],
    console: Console,
    vm: RunningVm,
    cdev: bool,
) -> None:
    assert scenario.hotplug is not None
    node = vfio_node(GROUPS[scenario.hotplug][0], cdev)
    qmp = vm.document["qmp"]
    with stages.stage("hotplug"):
        plugged, _ = kata_vfio_json("qemu", "hotplug", "--qmp", qmp, "--device", node)
        facts["hotplug"] = {"node": node, "cli": plugged, "seen": []}
        for path in plugged["guest_pci_paths"]:
            console.send(f"WAIT {path} {HOTPLUG_WAIT_S}")
            # L2's clock may run behind L1's under a loaded TCG: wait well past its limit.
            facts["hotplug"]["seen"].append(console.expect("wait", 2 * HOTPLUG_WAIT_S + 60))
        facts["hotplug"]["objects"] = [
            o["name"] for o in qmp_call(qmp, "qom-list", {"path": "/objects"})
        ]
    with stages.stage("unplug"):
        removed, _ = kata_vfio_json(
            "qemu", "unplug", "--qmp", qmp, "--device", node, "--timeout", str(HOTPLUG_WAIT_S)
        )
        facts["unplug"] = {"cli": removed, "gone": []}
        for path in plugged["guest_pci_paths"]:
            console.send(f"GONE {path} {HOTPLUG_WAIT_S}")
            facts["unplug"]["gone"].append(console.expect("wait", 2 * HOTPLUG_WAIT_S + 60))
        facts["unplug"]["objects"] = [
            o["name"] for o in qmp_call(qmp, "qom-list", {"path": "/objects"})
        ]
        facts["unplug"]["peripherals"] = [
            o["name"] for o in qmp_call(qmp, "qom-list", {"path": "/machine/peripheral"})
        ]


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Every scenario in turn, with the lab's NICs on vfio-pci (through the project)."""
    cdev = "cdev" in context["nested_modes"]
    endpoints = [b for group in GROUPS.values() for b in group]
    host_ids = {b: sysfs_ids(b) for b in endpoints}
    context = {**context, "cdev": cdev, "host_ids": host_ids}
    facts: dict[str, Any] = {
        "mode": "cdev" if cdev else "legacy",
        "host_ids": host_ids,
        "scenarios": {},
        "stages": [],
        "failed_stage": None,
    }
    spec_dir = tempfile.mkdtemp(prefix="kvseed-cdi-")
    try:
        with _recorded(facts, "restore_error"), bound(endpoints):
            stages = Stages(facts, "cdi")
            try:
                with stages.stage("generate"):
                    naming = ["--naming", "cdev", "--cdev"] if cdev else ["--naming", "group"]
                    kata_vfio(
                        "cdi",
                        "--spec-dir",
                        spec_dir,
                        "generate",
                        "--kind",
                        KIND,
                        *naming,
                        "--output-dir",
                        spec_dir,
                        *(a for b in endpoints for a in ("--bdf", b)),
                    )
                    names = _spec_names(spec_dir)
                    facts["cdi_names"] = names
            except Exception:
                return facts
            for scenario in SCENARIOS:
                facts["scenarios"][scenario.name] = _scenario(scenario, context, spec_dir, names)
            facts["viommu_refusal"] = _refusal(REFUSED, context, spec_dir, names)
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)
    return facts


@contextlib.contextmanager
def _recorded(facts: dict[str, Any], key: str) -> Iterator[None]:
    """An error leaving the block goes into ``facts[key]`` (the other facts survive)."""
    try:
        yield
    except Exception as exc:
        facts[key] = f"{type(exc).__name__}: {exc}"


def _spec_names(spec_dir: str) -> dict[str, str]:
    """node -> qualified CDI name, read from the written spec file itself."""
    names: dict[str, str] = {}
    for path in Path(spec_dir).glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        for device in spec["devices"]:
            if device["name"] == "all":  # every device's nodes: not one group's name
                continue
            for node in device.get("containerEdits", {}).get("deviceNodes", []):
                names[node["path"]] = f"{spec['kind']}={device['name']}"
    return names
