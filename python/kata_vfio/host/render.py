"""How the core's facts read to a person: the one place that turns verdicts, blocker kinds,
structured fixes, read problems and the remedies of errors into sentences and ``kata-vfio``
commands.

The Rust core returns data only (``Blocker.kind``, ``Blocker.fix.action``, ``ReadProblem``
reasons, ``KataVfioError.remedies``); everything a user reads about them is worded here, so
the CLI, the sandbox planner, the node inventory and the errors of the VFIO and binding
helpers say the same thing the same way.
"""

from __future__ import annotations

from kata_vfio._core import Bdf, Blocker, Fix, IommuGroup, IommuStatus, PciDevice, ReadProblem

__all__ = [
    "absent_hint",
    "blocker_reason",
    "bridge_hint",
    "device_unreadable_hint",
    "driver_text",
    "fix_command",
    "fix_text",
    "group_hint",
    "listing_text",
    "manual_lines",
    "missing_group_node_hint",
    "no_group_hint",
    "platform_reason",
    "problem_text",
    "remedy_text",
    "status_reason",
    "unknown_reasons",
    "verdict_text",
    "with_remedies",
]

_VERDICTS = {
    "assignable": "assignable",
    "not-ready": "viable, not ready",
    "not-viable": "NOT VIABLE",
    "unknown": "UNKNOWN (a member cannot be read)",
    "no-endpoints": "no endpoints (bridges only)",
}

_PLATFORM = {
    "host-bridge": "a host bridge, the root complex's own function",
    "isa-bridge": "an ISA/LPC bridge: firmware flash, TPM, embedded controller and legacy I/O "
    "sit behind it",
    "legacy-bus-bridge": "a legacy bus bridge (EISA/MCA) the platform's devices sit behind",
    "smbus": "an SMBus controller: memory SPD, hardware monitors and voltage regulators sit on it",
    "iommu": "the IOMMU itself, which gives VFIO its DMA isolation",
    "interrupt-controller": "an interrupt controller the host's interrupts go through",
    "dma-controller": "the platform's legacy DMA controller",
    "timer": "a system timer the host keeps time with",
    "rtc": "the real-time clock",
    "event-collector": "a root complex event collector (PCIe error reporting)",
    "memory-controller": "a memory controller of the platform",
    "boot-vga": "the boot VGA device: the firmware's and the host's console is on it",
    "root-complex-peripheral": "a system peripheral of the root complex that no driver claims "
    "(CPU uncore registers: memory map, VT-d, RAS)",
}

_PROBLEMS = {
    "missing": "is missing",
    "permission-denied": "permission denied",
    "not-a-regular-file": "is not a regular file (a FIFO, device node, directory or link)",
    "escapes-root": "is a link that leaves the sysfs root",
    "invalid": "does not hold what the kernel writes there",
    "os-error": "cannot be read",
}


def verdict_text(group: IommuGroup) -> str:
    """The group's verdict in a few words (``NOT VIABLE``, ``viable, not ready``)."""
    return _VERDICTS.get(group.verdict, group.verdict)


def platform_reason(function: str) -> str:
    """What the host loses if this platform function (``isa-bridge``, ``smbus``) is taken."""
    return _PLATFORM.get(function, f"a platform function ({function})")


def status_reason(reason: str) -> str:
    """A :attr:`ReadProblem.reason` name in words (``permission denied``)."""
    return _PROBLEMS.get(reason, reason)


def problem_text(problem: ReadProblem) -> str:
    """One read problem: ``uevent: permission denied``, ``resource does not hold what the
    kernel writes there``; the device directory itself is ``its device directory ...``."""
    what = _PROBLEMS.get(problem.reason, problem.reason)
    if problem.errno is not None and problem.reason == "os-error":
        what += f" (errno {problem.errno})"
    if problem.attribute == "device" and problem.reason == "missing":
        return "listed by the kernel, but its device directory is missing"
    subject = "its device directory" if problem.attribute == "device" else problem.attribute
    # "uevent is not a regular file", "resource does not hold ...", "uevent: permission denied"
    joint = " " if what.startswith(("is ", "does ", "cannot ")) else ": "
    return f"{subject}{joint}{what}"


def blocker_reason(blocker: Blocker) -> str:
    """Why the member blocks its group, in one sentence."""
    driver = blocker.driver or ""
    if blocker.kind == "host-driver":
        return (
            f"endpoint bound to host driver {driver}, which does DMA, so the kernel refuses "
            "the whole group (not viable)"
        )
    if blocker.kind == "bridge-driver":
        return (
            f"bridge bound to {driver}, a driver that uses DMA, so the kernel will not make "
            "the group viable"
        )
    if blocker.kind == "unbound":
        return (
            "endpoint has no driver: the group is viable, but QEMU can only open it through "
            "vfio-pci"
        )
    if blocker.kind == "stub":
        return (
            "endpoint is on pci-stub: the group is viable, but QEMU can only open it through "
            "vfio-pci"
        )
    problem = blocker.problem
    detail = problem_text(problem) if problem is not None else "it cannot be read"
    return (
        f"the scan cannot read this member ({detail}), so whether the kernel would accept the "
        "group is unknown"
    )


def fix_command(fix: Fix) -> str | None:
    """The one ``kata-vfio`` command that applies the fix; ``None`` when there is none to run
    (no safe fix, or a bridge to unbind by hand)."""
    if fix.action == "bind-group":
        return f"kata-vfio bind --group {fix.group}"
    if fix.action == "bind-device":
        return f"kata-vfio bind {fix.bdf}"
    return None


def fix_text(blocker: Blocker) -> str:
    """The fix of one blocker as the line to show after ``fix:``: the command, the manual
    step, or why there is none."""
    fix = blocker.fix
    command = fix_command(fix)
    if command is not None:
        return command
    if fix.action == "unbind-bridge":
        return f"unbind it from {blocker.driver} (bridges are never bound to vfio-pci)"
    if fix.because == "platform-function":
        function = fix.platform_function or "platform"
        return (
            f"none: {fix.bdf} is {platform_reason(function)}; taking it from the host is not "
            "safe (kata-vfio bind refuses it without --force)"
        )
    problem = blocker.problem if fix.bdf == blocker.bdf else None
    advice = _UNREAD_ADVICE.get(problem.reason if problem else "", "see why above")
    return f"none until {fix.bdf} can be read: {advice}"


_UNREAD_ADVICE = {
    "missing": "it is missing from this tree (a copy may lack it; on a live host, scan again)",
    "permission-denied": "scan as root",
    "not-a-regular-file": "the tree holds something the kernel never puts there; check it",
    "escapes-root": "a link in the tree leads out of it; check the tree",
    "invalid": "the tree holds text the kernel never writes there; check it",
}


def manual_lines(blocker: Blocker) -> list[str]:
    """The fix as the shell lines to type by hand (``echo VALUE > PATH``), in order; empty
    when there is no safe fix."""
    return [f"echo {value} > {path}" for path, value in blocker.writes]


def device_unreadable_hint(problem: ReadProblem) -> str:
    """What to tell about a function the scan saw but could not read."""
    return f"{problem.bdf} cannot be read ({problem_text(problem)}): scan as root"


def driver_text(device: PciDevice) -> str:
    """The driver column: the name, ``(no driver)``, or ``(unknown)`` when unreadable."""
    if device.driver is not None:
        return device.driver
    if any(p.attribute == "driver" for p in device.problems):
        return "(unknown)"
    return "(no driver)"


def absent_hint(bdf: Bdf) -> str:
    """A device the scan did not find."""
    return f"no PCI device {bdf} on this host: run `kata-vfio scan` to list the devices"


def bridge_hint(device: PciDevice) -> str:
    """A bridge named where an endpoint is wanted."""
    role = "host bridge" if device.is_host_bridge else "PCI bridge or port"
    return (
        f"{device.bdf} is a {role}: bridges are never passed through; pass the endpoints behind it"
    )


def no_group_hint(device: PciDevice, problem: ReadProblem | None, iommu: IommuStatus) -> str:
    """An endpoint without an IOMMU group (or whose group link cannot be read)."""
    if problem is not None:
        return f"{device.bdf}: its IOMMU group is unknown ({problem_text(problem)}): scan as root"
    reason = "; ".join(iommu.reasons[:1]) or "the IOMMU is off"
    return f"{device.bdf} has no IOMMU group ({reason}): run `kata-vfio doctor`"


def group_hint(bdf: Bdf, group: IommuGroup, node: str | None) -> str:
    """Whether the device's group is ready, and if not why and what to run."""
    if group.assignable:
        others = [str(b) for b in group.endpoints if b != bdf]
        with_text = f" together with {', '.join(others)}" if others else ""
        return f"ready: pass {node}{with_text}"
    listing = listing_text(group)
    if group.blockers and not group.unplaced:
        first = group.blockers[0]
        state = "unknown" if group.verdict == "unknown" else "not ready"
        return (
            f"group {group.id} is {state}: {first.bdf} {blocker_reason(first)}; "
            f"fix: {fix_text(first)}"
        )
    if listing is not None:
        return f"group {group.id} is unknown: {listing}"
    return f"group {group.id} has no endpoints to pass"


def missing_group_node_hint(group: int) -> str:
    """A group whose ``/dev/vfio`` node is not there."""
    return (
        f"no such group node: the devices of IOMMU group {group} are not bound to vfio-pci "
        f"(`kata-vfio bind --group {group}`), or the IOMMU is off (`kata-vfio doctor`)"
    )


def unknown_reasons(group: IommuGroup) -> list[str]:
    """Why the group's verdict is ``unknown``, one sentence a cause (a member that cannot be
    read, a member list that cannot be); empty for any other verdict."""
    if group.verdict != "unknown":
        return []
    reasons = [f"{b.bdf}: {blocker_reason(b)}" for b in group.blockers if b.kind == "unknown"]
    listing = listing_text(group)
    if listing is not None:
        reasons.append(listing)
    return [f"IOMMU group {group.id} is unknown: {r}" for r in reasons] or [
        f"IOMMU group {group.id} is unknown: a member cannot be read"
    ]


def listing_text(group: IommuGroup) -> str | None:
    """Why the group's member list is unknown, when it is."""
    if group.unplaced:
        names = ", ".join(str(b) for b in group.unplaced)
        return (
            f"the IOMMU group of {names} cannot be read and this tree has no "
            "kernel/iommu_groups listing: it may belong to this group"
        )
    if group.listing_problem is None:
        return None
    what = _PROBLEMS.get(group.listing_problem, group.listing_problem)
    return f"kernel/iommu_groups/{group.id}/devices {what}: its members cannot be checked"


_REMEDIES = {
    "force": "--force (force=True) acts anyway and says what it overrode",
    "restore": "`kata-vfio restore` (binding.restore()) puts the journaled devices back and "
    "may be run again",
    "check-iommu": "`kata-vfio doctor` shows the IOMMU state and the boot argument to add",
    "bind-group": "`kata-vfio bind --group` (binding.bind(..., group=True)) binds every "
    "endpoint of the group",
    "name-driver": "name the driver explicitly (--driver, driver=)",
    "state-dir": "or use another state directory (--state-dir, state_dir=)",
    "list-devices": "`kata-vfio scan` lists the devices",
}


def remedy_text(remedy: str) -> str:
    """One remedy of an error (:attr:`~kata_vfio.errors.KataVfioError.remedies`) as the step
    to take, naming the CLI option and the API argument alike."""
    return _REMEDIES.get(remedy, remedy)


def with_remedies(hint: str | None, remedies: tuple[str, ...]) -> str | None:
    """The core's hint followed by its remedies in words (``stop using them first; --force
    (force=True) acts anyway ...``); the hint alone when there are none."""
    parts = ([hint] if hint else []) + [remedy_text(r) for r in remedies]
    return "; ".join(parts) or None
