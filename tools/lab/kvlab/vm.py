"""Booting the lab guest: the QEMU command line, the guest's command file, the run itself."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from kvlab import proc, topology
from kvlab.errors import LabError
from kvlab.kernels import Kernel

# Paths end up inside QEMU's comma-separated options and on the kernel command line, where a
# comma or a space would change their meaning; the lab refuses them instead of escaping.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/@-]*")
_STARTED = re.compile(r"KVLAB: command starts at ([0-9.]+)s")
_RC = re.compile(r"^KVLAB-RC=([0-9]+)", re.MULTILINE)


def safe_path(path: Path, what: str) -> str:
    """``path`` as a string, if it is absolute and has no character QEMU or the kernel split on."""
    text = str(path)
    if not _SAFE_PATH.fullmatch(text) or "/../" in f"{text}/":
        raise LabError(
            f"{what} path {text!r} cannot be passed to the lab VM",
            hint="use an absolute path of letters, digits and ._+-@/ only",
        )
    return text


@dataclasses.dataclass(frozen=True)
class VmConfig:
    """Everything one boot needs."""

    kernel: Kernel
    initrd: Path
    out_dir: Path
    memory_mib: int = 2048
    cpus: int = 2
    timeout_s: float = 900.0
    qemu: str = "qemu-system-x86_64"
    cpu: str = "max"


def kernel_cmdline(config: VmConfig) -> str:
    """The guest kernel's arguments: serial console, the vIOMMU on and strict, lab settings."""
    args = [
        "console=ttyS0",
        "panic=-1",
        "quiet",
        "loglevel=4",
        "intel_iommu=on",
        "iommu.strict=1",
        f"kvlab.out={safe_path(config.out_dir, 'output')}",
    ]
    if config.kernel.module_dir is not None:
        args.append(f"kvlab.moddir={safe_path(config.kernel.module_dir, 'module')}")
    else:
        args.append("kvlab.coldplug=0")  # all built in: nothing to load
    return " ".join(args)


def qemu_argv(config: VmConfig) -> list[str]:
    """The full QEMU command line of one lab boot (TCG, q35, Intel vIOMMU, the topology)."""
    out = safe_path(config.out_dir, "output")
    share = "security_model=none,multidevs=remap"
    argv = [
        config.qemu,
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        config.cpu,
        "-smp",
        str(config.cpus),
        "-m",
        f"{config.memory_mib}M",
        *numa_options(config),
        "-machine",
        "q35,kernel-irqchip=split",
        "-serial",
        f"file:{out}/console.log",
        "-kernel",
        safe_path(config.kernel.image, "kernel"),
        "-initrd",
        safe_path(config.initrd, "initramfs"),
        "-append",
        kernel_cmdline(config),
        # The vIOMMU comes before the devices it translates for.
        "-device",
        "intel-iommu,intremap=on,caching-mode=on",
        "-fsdev",
        f"local,id=hostroot,path=/,readonly=on,{share}",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0,addr=0x8",
        "-fsdev",
        f"local,id=out,path={out},{share}",
        "-device",
        "virtio-9p-pci,fsdev=out,mount_tag=out,bus=pcie.0,addr=0x9",
    ]
    for device in topology.DEVICES:
        argv += ["-device", device.option()]
    return argv


def numa_options(config: VmConfig) -> list[str]:
    """``topology.NUMA_NODES`` nodes sharing the memory; every CPU on node 0, the other nodes
    memory only. The expander's devices need a node 1 to belong to; keeping the CPUs on one
    node keeps the scheduler's view of them as it was without NUMA (a Debian L1 with one CPU
    per node once hung under TCG: a vCPU's timer interrupt never came)."""
    nodes = topology.NUMA_NODES
    share = config.memory_mib // nodes
    options: list[str] = []
    for node in range(nodes):
        memory = share + (config.memory_mib - share * nodes if node == 0 else 0)
        numa = f"node,nodeid={node},memdev=lab-mem{node}"
        if node == 0:
            numa += f",cpus=0-{config.cpus - 1}" if config.cpus > 1 else ",cpus=0"
        options += ["-object", f"memory-backend-ram,id=lab-mem{node},size={memory}M"]
        options += ["-numa", numa]
    return options


def guest_environment(extra: Mapping[str, str], out_dir: Path) -> dict[str, str]:
    """The command's environment in the guest: this process's PATH, no pyc writes, lab flags."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "KVLAB_GUEST": "1",
        "KVLAB_OUT": str(out_dir),
    }
    env.update(extra)
    return env


def command_script(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    """The sh script guest/init runs in the chroot: cd, then exec ``argv`` with ``env`` only."""
    assignments = [f"{key}={value}" for key, value in sorted(env.items())]
    return (
        f"cd {shlex.quote(str(cwd))} || exit 125\n"
        f"exec /usr/bin/env -i {shlex.join([*assignments, *argv])}\n"
    )


@dataclasses.dataclass(frozen=True)
class BootResult:
    """What one boot gave: the command's exit status and where the evidence is."""

    returncode: int | None  # None: the guest never reported one (crash, timeout)
    timed_out: bool
    wall_s: float
    command_started_s: float | None  # guest uptime when the command started
    out_dir: Path

    @property
    def console(self) -> str:
        """The guest's serial console output."""
        path = self.out_dir / "console.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def describe(self) -> str:
        """One paragraph for an error message: status plus the console's tail."""
        state = "timed out" if self.timed_out else f"exit status {self.returncode}"
        tail = "\n".join(self.console.splitlines()[-40:])
        return f"lab guest {state} after {self.wall_s:.1f} s; console tail:\n{tail}"


def boot(
    config: VmConfig,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> BootResult:
    """Boot the guest, run ``argv`` there (from ``cwd``), wait for power-off."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("rc", "console.log"):
        (config.out_dir / stale).unlink(missing_ok=True)
    script = command_script(argv, cwd, guest_environment(env or {}, config.out_dir))
    (config.out_dir / "command.sh").write_text(script)
    full = qemu_argv(dataclasses.replace(config, qemu=proc.require_tool(config.qemu)))
    (config.out_dir / "qemu.argv").write_text(shlex.join(full) + "\n")
    started = time.monotonic()
    timed_out = False
    with (config.out_dir / "qemu.log").open("wb") as log:
        qemu = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            qemu.wait(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            qemu.kill()
            qemu.wait()
    wall = time.monotonic() - started
    console = (config.out_dir / "console.log").read_text(errors="replace")
    if qemu.returncode not in (0, None) and not timed_out and "KVLAB-RC=" not in console:
        qemu_log = (config.out_dir / "qemu.log").read_text(errors="replace").strip()
        raise LabError(f"QEMU failed (exit {qemu.returncode}): {qemu_log[-2000:]}")
    return BootResult(
        returncode=_returncode(config.out_dir, console),
        timed_out=timed_out,
        wall_s=wall,
        command_started_s=float(match.group(1)) if (match := _STARTED.search(console)) else None,
        out_dir=config.out_dir,
    )


def _returncode(out_dir: Path, console: str) -> int | None:
    # guest/init writes the status to the results share, and prints it as a fallback.
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((out_dir / "rc").read_text().strip())
    match = _RC.search(console)
    return int(match.group(1)) if match else None
