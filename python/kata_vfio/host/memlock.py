"""Memlock diagnosis: how much memory a VM with VFIO devices must be able to lock, against
the process's ``RLIMIT_MEMLOCK``.

VFIO pins all guest RAM the device may DMA to. The rule libvirt uses (and that kubevirt
copies): the limit must cover the guest memory plus 1 GiB for MMIO and ROM mappings, once
per VFIO container. Without a vIOMMU all devices share one container; with a vIOMMU each
device gets its own, so the guest memory counts once per device. iommufd shares one IOAS,
but on some kernels it also counts the devices' BARs (PFNMAP pages) against the limit:
pass ``bar_bytes`` to include them.

A process with ``CAP_IPC_LOCK`` is not held to the limit by vfio's type1 IOMMU. iommufd
accounts per user by default (every process of the user shares the limit) unless the
privileged caller switches it to per-process with ``IOMMU_OPTION_RLIMIT_MODE``.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

from kata_vfio.errors import InvalidInputError
from kata_vfio.units import format_size, parse_size

__all__ = [
    "MIN_VM_MEMORY",
    "MemlockDiagnosis",
    "MemlockLimit",
    "current_limit",
    "diagnose",
    "format_size",
    "has_cap_ipc_lock",
    "parse_size",
    "required_memlock",
]

GIB = 1 << 30
MIN_VM_MEMORY = 1 << 20
"""Smaller VM sizes are refused as unit mistakes (``4096`` is bytes; ``4096M`` was meant)."""
# Headroom per container for MMIO and ROM mappings (libvirt's 1 GiB).
OVERHEAD = GIB
CAP_IPC_LOCK = 14


def required_memlock(
    vm_memory: int,
    *,
    devices: int = 1,
    viommu: bool = False,
    iommufd: bool = False,
    bar_bytes: int = 0,
) -> int:
    """Bytes a VM of ``vm_memory`` bytes with ``devices`` VFIO devices must be able to lock.

    ``viommu``: the guest has a virtual IOMMU (one container per device). ``iommufd``: the
    devices use iommufd (one shared IOAS). ``bar_bytes``: BAR bytes the kernel counts too.
    """
    if vm_memory < 0 or devices < 0 or bar_bytes < 0:
        raise InvalidInputError(
            "memory sizes and device counts cannot be negative",
            hint="pass the VM's memory in bytes and the number of VFIO devices",
        )
    if devices == 0:
        return 0
    containers = devices if viommu and not iommufd else 1
    return containers * vm_memory + OVERHEAD + bar_bytes


@dataclass(frozen=True)
class MemlockLimit:
    """``RLIMIT_MEMLOCK``; None means unlimited."""

    soft: int | None
    hard: int | None


def current_limit() -> MemlockLimit:
    """This process's ``RLIMIT_MEMLOCK``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

    def value(v: int) -> int | None:
        return None if v == resource.RLIM_INFINITY else v

    return MemlockLimit(value(soft), value(hard))


def has_cap_ipc_lock(proc_root: str = "/proc") -> bool:
    """Whether this process has ``CAP_IPC_LOCK`` in its effective set (from
    ``<proc_root>/self/status``); False when that cannot be read."""
    try:
        with open(f"{proc_root}/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


@dataclass(frozen=True)
class MemlockDiagnosis:
    """Needed versus allowed, and what to do about it."""

    vm_memory: int
    devices: int
    viommu: bool
    iommufd: bool
    needed: int
    limit: MemlockLimit
    cap_ipc_lock: bool
    ok: bool
    detail: str
    hint: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "vm_memory": self.vm_memory,
            "devices": self.devices,
            "viommu": self.viommu,
            "iommufd": self.iommufd,
            "needed": self.needed,
            "soft_limit": self.limit.soft,
            "hard_limit": self.limit.hard,
            "cap_ipc_lock": self.cap_ipc_lock,
            "ok": self.ok,
            "detail": self.detail,
            "hint": self.hint,
        }


def diagnose(
    vm_memory: int,
    *,
    devices: int = 1,
    viommu: bool = False,
    iommufd: bool = False,
    bar_bytes: int = 0,
    limit: MemlockLimit | None = None,
    cap_ipc_lock: bool | None = None,
) -> MemlockDiagnosis:
    """Compares :func:`required_memlock` with ``limit`` (default: this process's) and says
    whether DMA mapping will fit. ``cap_ipc_lock`` defaults to this process's capability."""
    needed = required_memlock(
        vm_memory, devices=devices, viommu=viommu, iommufd=iommufd, bar_bytes=bar_bytes
    )
    limit = limit or current_limit()
    cap = has_cap_ipc_lock() if cap_ipc_lock is None else cap_ipc_lock
    soft_ok = limit.soft is None or limit.soft >= needed
    hard_ok = limit.hard is None or limit.hard >= needed
    detail = f"needs {format_size(needed)}; RLIMIT_MEMLOCK is {format_size(limit.soft)}"
    if limit.hard != limit.soft:
        detail += f" (hard {format_size(limit.hard)})"
    hint: str | None = None
    if soft_ok:
        ok = True
    elif cap and not iommufd:
        ok = True
        detail += "; CAP_IPC_LOCK exempts type1 pinning from the limit"
    else:
        ok = False
        raise_to = "" if hard_ok else " (the hard limit too: as root, or in limits.conf)"
        hint = (
            f"raise RLIMIT_MEMLOCK to at least {needed} bytes for the VM process{raise_to}: "
            "`ulimit -l unlimited`, LimitMEMLOCK=infinity in its systemd unit, or memlock in "
            "/etc/security/limits.conf; otherwise DMA mapping fails with ENOMEM"
        )
    return MemlockDiagnosis(
        vm_memory, devices, viommu, iommufd, needed, limit, cap, ok, detail, hint
    )
