"""The bundled sample host: an 8-GPU HGX-like server with two sockets.

Shape (taken from real Ice Lake-SP servers and HGX H100 boards; IDs from pci.ids and real
``lspci -nn`` listings): per socket several root buses, each with the CPU's own functions
(Memory Map/VT-d, Mesh, RAS, and the IEH host bridge 0x0600); Broadcom PEX890xx switches
(1000:c030) fanning out to H100 SXM5 GPUs (10de:2330, 128 GiB prefetchable BAR), ConnectX-7
NICs (15b3:1021, one dual-port PF with four VFs 15b3:101e on vfio-pci) and Samsung PM9A3
NVMe drives (144d:a80a); four GH100 NVSwitches (10de:22a3, class 0x0680) behind their own
switch; an RTX 6000 Ada (10de:26b1) whose HD-audio function (10de:22ba) is still on
snd_hda_intel, so its group is not viable; the BMC's ASPEED VGA behind a PCIe-to-PCI bridge
(one group with the bridge); the PCH's LPC/SMBus/SPI functions in one group. IOMMU on
(Intel), vfio cdev support, ``intel_iommu=on iommu=pt``.

:func:`sample_host` builds it once into a per-user cache keyed by the package version and a
hash of the description, and rebuilds it (atomically) when it is missing or damaged.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from typing import Any

from kata_vfio._core import __version__
from kata_vfio.errors import HostIOError
from kata_vfio.testing.builder import FakeHost, build_host, build_host_cached
from kata_vfio.testing.spec import BarSpec, DeviceSpec, HostSpec, LinkSpec, format_bdf
from kata_vfio.testing.topology import PCIEPORT, number_groups, switch

__all__ = ["sample_host", "sample_spec"]

GEN5_X16 = LinkSpec("32.0 GT/s PCIe", 16, "32.0 GT/s PCIe", 16)
GEN4_X16 = LinkSpec("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)
GEN4_X4 = LinkSpec("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4)
GEN4_X2 = LinkSpec("16.0 GT/s PCIe", 2, "16.0 GT/s PCIe", 2)
GEN1_X1 = LinkSpec("2.5 GT/s PCIe", 1, "5.0 GT/s PCIe", 1)

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class _Model:
    """What every unit of one product has in common."""

    vendor: int
    device: int
    class_code: int
    subsystem: tuple[int, int]
    revision: int
    bars: tuple[BarSpec, ...]
    reset: tuple[str, ...]
    link: LinkSpec

    def at(self, bdf: str, numa: int, driver: str | None, **place: Any) -> DeviceSpec:
        """One unit of the product at ``bdf`` (``parent``, ``physfn``, ... in ``place``)."""
        return DeviceSpec(
            bdf=bdf,
            vendor=self.vendor,
            device=self.device,
            class_code=self.class_code,
            subsystem_vendor=self.subsystem[0],
            subsystem_device=self.subsystem[1],
            revision=self.revision,
            driver=driver,
            numa_node=numa,
            bars=self.bars,
            reset_methods=self.reset,
            link=self.link,
            **place,
        )


def _mem64(index: int, size: int, pref: bool = False) -> BarSpec:
    return BarSpec(index, size, is_64bit=True, prefetchable=pref)


H100_SXM5 = _Model(
    0x10DE, 0x2330, 0x030200, (0x10DE, 0x16C1), 0xA1,
    (_mem64(0, 16 * MIB), _mem64(2, 128 * GIB, True), _mem64(4, 32 * MIB, True)),
    ("flr", "bus"), GEN5_X16,
)  # fmt: skip
CONNECTX7 = _Model(
    0x15B3, 0x1021, 0x020000, (0x15B3, 0x0021), 0x00, (_mem64(0, 32 * MIB, True),),
    ("flr", "bus"), GEN5_X16,
)  # fmt: skip
CONNECTX7_VF = _Model(
    0x15B3, 0x101E, 0x020000, (0x15B3, 0x0021), 0x00, (_mem64(0, 1 * MIB, True),),
    ("flr",), GEN5_X16,
)  # fmt: skip
PM9A3 = _Model(
    0x144D, 0xA80A, 0x010802, (0x144D, 0xA801), 0x00, (_mem64(0, 16 * KIB),),
    ("flr", "bus"), GEN4_X4,
)  # fmt: skip
NVSWITCH = _Model(
    0x10DE, 0x22A3, 0x068000, (0x10DE, 0x1796), 0xA1, (_mem64(0, 32 * MIB),),
    ("flr", "bus"), GEN4_X2,
)  # fmt: skip


def _h100(
    bdf: str, parent: str, numa: int, driver: str | None, override: str | None = None
) -> DeviceSpec:
    return H100_SXM5.at(bdf, numa, driver, parent=parent, driver_override=override)


def _cx7(bdf: str, parent: str, numa: int) -> DeviceSpec:
    return CONNECTX7.at(bdf, numa, "mlx5_core", parent=parent, sriov_totalvfs=16)


def _cx7_vf(bdf: str, pf: str, numa: int) -> DeviceSpec:
    return CONNECTX7_VF.at(bdf, numa, "vfio-pci", physfn=pf)


def _nvme(bdf: str, parent: str, numa: int, driver: str = "nvme") -> DeviceSpec:
    return PM9A3.at(bdf, numa, driver, parent=parent)


def _nvswitch(bdf: str, parent: str, numa: int) -> DeviceSpec:
    return NVSWITCH.at(bdf, numa, "vfio-pci", parent=parent)


def _cpu_stack(bus: int, numa: int) -> list[DeviceSpec]:
    """The CPU's own functions on each root bus of an Ice Lake-SP socket."""
    functions = ((0, 0x09A2, 0x088000), (1, 0x09A4, 0x088000), (2, 0x09A3, 0x088000))
    out = [
        DeviceSpec(format_bdf(0, bus, 0, fn), 0x8086, dev, cls, revision=0x04, numa_node=numa)
        for fn, dev, cls in functions
    ]
    # Function 4, the IEH, is a host bridge (class 0x0600).
    out.append(DeviceSpec(format_bdf(0, bus, 0, 4), 0x8086, 0x0998, 0x060000, numa_node=numa))
    return out


def _root_port(bus: int, dev: int, numa: int, device_id: int = 0x347A) -> DeviceSpec:
    return DeviceSpec(
        bdf=format_bdf(0, bus, dev, 0),
        vendor=0x8086,
        device=device_id,
        class_code=0x060400,
        subsystem_vendor=0x8086,
        revision=0x04,
        driver=PCIEPORT,
        numa_node=numa,
        link=GEN5_X16,
        reset_methods=("pm",),
    )


def _switched_stack(bus: int, numa: int) -> list[DeviceSpec]:
    """A root bus with the CPU's functions and a root port at 01.0 leading to a PEX890xx
    switch (upstream port on bus+1, four downstream ports on bus+2)."""
    port = _root_port(bus, 0x01, numa)
    ports = switch(port.bdf, format_bdf(0, bus + 1, 0, 0), bus + 2, 4)
    return [*_cpu_stack(bus, numa), port, *(replace(d, numa_node=numa) for d in ports)]


def sample_spec() -> HostSpec:
    """The description of the sample host."""
    d: list[DeviceSpec] = []
    # Socket 0, legacy root bus: CPU functions, the BMC's VGA and the PCH.
    d += _cpu_stack(0x00, 0)
    d.append(_root_port(0x00, 0x1C, 0, device_id=0xA190))
    d.append(
        DeviceSpec("0000:01:00.0", 0x1A03, 0x1150, 0x060400, revision=0x04, numa_node=0,
                   parent="0000:00:1c.0", link=GEN1_X1)
    )  # fmt: skip
    d.append(
        DeviceSpec("0000:02:00.0", 0x1A03, 0x2000, 0x030000, 0x1A03, 0x2000, revision=0x52,
                   driver="ast", numa_node=0, parent="0000:01:00.0", pcie=False,
                   bars=(BarSpec(0, 64 * MIB), BarSpec(1, 256 * KIB),
                         BarSpec(2, 128, is_io=True)), boot_vga=True)
    )  # fmt: skip
    d.append(DeviceSpec("0000:00:1f.0", 0x8086, 0xA1C1, 0x060100, 0x8086, 0x7270, 0x09,
                        numa_node=0, pcie=False))  # fmt: skip
    d.append(DeviceSpec("0000:00:1f.4", 0x8086, 0xA1A3, 0x0C0500, 0x8086, 0x7270, 0x09,
                        driver="i801_smbus", numa_node=0, pcie=False,
                        bars=(BarSpec(0, 256, is_64bit=True),
                              BarSpec(4, 32, is_io=True))))  # fmt: skip
    d.append(DeviceSpec("0000:00:1f.5", 0x8086, 0xA1A4, 0x0C8000, 0x8086, 0x7270, 0x09,
                        numa_node=0, pcie=False, bars=(BarSpec(0, 4 * KIB),)))  # fmt: skip
    # Socket 0, stack 0x15: switch with GPU0, a dual-port ConnectX-7 with VFs, NVMe, GPU1.
    d += _switched_stack(0x15, 0)
    d.append(_h100("0000:18:00.0", "0000:17:00.0", 0, "vfio-pci"))
    d.append(_cx7("0000:19:00.0", "0000:17:01.0", 0))
    d.append(_cx7("0000:19:00.1", "0000:17:01.0", 0))
    d += [_cx7_vf(f"0000:19:00.{fn}", "0000:19:00.0", 0) for fn in range(2, 6)]
    d.append(_nvme("0000:1a:00.0", "0000:17:02.0", 0))
    d.append(_h100("0000:1b:00.0", "0000:17:03.0", 0, "vfio-pci"))
    # Socket 0, stack 0x2a: GPU2, NIC, NVMe, GPU3.
    d += _switched_stack(0x2A, 0)
    d.append(_h100("0000:2d:00.0", "0000:2c:00.0", 0, "vfio-pci"))
    d.append(_cx7("0000:2e:00.0", "0000:2c:01.0", 0))
    d.append(_nvme("0000:2f:00.0", "0000:2c:02.0", 0))
    d.append(_h100("0000:30:00.0", "0000:2c:03.0", 0, "vfio-pci"))
    # Socket 0, stack 0x3d: the four NVSwitches behind their switch, and the boot NVMe.
    d += _switched_stack(0x3D, 0)
    d += [_nvswitch(f"0000:{0x40 + i:02x}:00.0", f"0000:3f:{i:02x}.0", 0) for i in range(4)]
    d.append(_root_port(0x3D, 0x02, 0, device_id=0x347B))
    d.append(_nvme("0000:44:00.0", "0000:3d:02.0", 0))
    # Socket 1, stack 0x80: GPU4, NIC, NVMe on vfio-pci, GPU5.
    d += _switched_stack(0x80, 1)
    d.append(_h100("0000:83:00.0", "0000:82:00.0", 1, "vfio-pci"))
    d.append(_cx7("0000:84:00.0", "0000:82:01.0", 1))
    d.append(_nvme("0000:85:00.0", "0000:82:02.0", 1, driver="vfio-pci"))
    d.append(_h100("0000:86:00.0", "0000:82:03.0", 1, "vfio-pci"))
    # Socket 1, stack 0x97: GPU6 still on nvidia, NIC, an empty port, GPU7 unbound with an
    # override waiting for a probe.
    d += _switched_stack(0x97, 1)
    d.append(_h100("0000:9a:00.0", "0000:99:00.0", 1, "nvidia"))
    d.append(_cx7("0000:9b:00.0", "0000:99:01.0", 1))
    d.append(_h100("0000:9d:00.0", "0000:99:03.0", 1, None, override="vfio-pci"))
    # Socket 1, stack 0xa8: a PCIe workstation GPU whose audio function blocks its group.
    d += _cpu_stack(0xA8, 1)
    d.append(_root_port(0xA8, 0x01, 1))
    d.append(
        DeviceSpec("0000:a9:00.0", 0x10DE, 0x26B1, 0x030000, 0x10DE, 0x16A1, 0xA1,
                   driver="vfio-pci", numa_node=1, parent="0000:a8:01.0",
                   bars=(BarSpec(0, 16 * MIB), BarSpec(1, 64 * GIB, is_64bit=True,
                         prefetchable=True), BarSpec(3, 32 * MIB, is_64bit=True,
                         prefetchable=True), BarSpec(5, 128, is_io=True)),
                   reset_methods=("flr", "bus"), link=GEN4_X16)
    )  # fmt: skip
    d.append(
        DeviceSpec("0000:a9:00.1", 0x10DE, 0x22BA, 0x040300, 0x10DE, 0x16A1, 0xA1,
                   driver="snd_hda_intel", numa_node=1, parent="0000:a8:01.0",
                   bars=(BarSpec(0, 16 * KIB),), reset_methods=("bus",), link=GEN4_X16)
    )  # fmt: skip
    together = (
        ("0000:00:00.0", "0000:00:00.1", "0000:00:00.2", "0000:00:00.4"),
        ("0000:01:00.0", "0000:02:00.0"),
        ("0000:00:1f.0", "0000:00:1f.4", "0000:00:1f.5"),
        ("0000:a9:00.0", "0000:a9:00.1"),
    )
    return HostSpec(
        devices=number_groups(d, together),
        iommu=True,
        iommu_vendor="intel",
        cdev=True,
        numa_nodes=2,
        cpus_per_node=64,
        cmdline=(
            "BOOT_IMAGE=/boot/vmlinuz-6.8.0-48-generic "
            "root=UUID=3f1c2e9a-5b7d-4c1e-9a0f-6d2b8e4c7a13 ro intel_iommu=on iommu=pt"
        ),
    )


def _cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kata-vfio")


def _cache_key(spec: HostSpec) -> str:
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:16]
    return f"sample-{__version__}-{digest}"


def sample_host(path: str | os.PathLike[str] | None = None) -> FakeHost:
    """The bundled sample host. With ``path`` it is built there (for tests that change it);
    without, it is built once into ``~/.cache/kata-vfio`` (``$XDG_CACHE_HOME``) and reused
    read-only: treat that copy as shared and never mutate it."""
    spec = sample_spec()
    if path is not None:
        return build_host(path, spec)
    cache = _cache_root()
    try:
        return build_host_cached(cache, _cache_key(spec), spec)
    except OSError as exc:
        if isinstance(exc, HostIOError):
            raise
        raise HostIOError(
            f"cannot write the sample host into {cache}: {exc.strerror or exc}",
            errno=exc.errno,
            path=exc.filename or cache,
            hint="point XDG_CACHE_HOME at a directory you can write (the sample host is "
            "built there once and reused)",
        ) from exc
