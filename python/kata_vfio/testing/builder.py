"""Writes a fake host (sysfs, devfs, procfs) from a :class:`~kata_vfio.testing.spec.HostSpec`.

The tree has what the kernel shows: real device directories nested under their bridges in
``sys/devices/pci<DDDD>:<BB>/``, relative ``bus/pci/devices`` links, driver directories with
their bind/unbind files, ``kernel/iommu_groups``, ``class/iommu``, firmware tables, vfio
modules, cdevs and ``/dev`` nodes (plain files: tests cannot create device nodes).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kata_vfio._core import HostPaths
from kata_vfio.errors import InvalidInputError
from kata_vfio.testing import _fs, attrs
from kata_vfio.testing.kernel import (
    IOMMUFD_MISC_MINOR,
    MISC_MAJOR,
    VFIO_MISC_MINOR,
    FakeKernel,
    iommu_units,
    make_unreadable,
    new_staging_dir,
    write_device,
)
from kata_vfio.testing.spec import DeviceSpec, HostSpec, host_from_dict, parse_bdf

_FIRMWARE_TABLE = {"intel": "DMAR", "amd": "IVRS", "arm": "IORT"}
_RESERVED_REGIONS = {
    "intel": "0x00000000fee00000 0x00000000feefffff msi\n",
    "amd": "0x00000000fee00000 0x00000000feefffff msi\n"
    "0x000000fd00000000 0x000000ffffffffff reserved\n",
    "arm": "0x0000000008000000 0x00000000080fffff msi\n",
}


@dataclass(frozen=True)
class FakeHost:
    """A fake host on disk: :attr:`paths` (``sysfs_root``, ``dev_root`` and ``proc_root``) is
    what the scan and the CLI take (``--sysfs-root`` etc.). The mutators change the tree the
    way the kernel would (see :mod:`kata_vfio.testing.kernel`)."""

    root: str
    sysfs_root: str
    dev_root: str
    proc_root: str
    spec: HostSpec | None = field(default=None, repr=False, compare=False)

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> FakeHost:
        """The fake host whose ``sys``, ``dev`` and ``proc`` live under ``root``."""
        base = os.fspath(root)
        return cls(
            base,
            os.path.join(base, "sys"),
            os.path.join(base, "dev"),
            os.path.join(base, "proc"),
        )

    @property
    def paths(self) -> HostPaths:
        """The tree's paths, for :func:`kata_vfio.scan` and every API that touches a host."""
        return HostPaths(self.sysfs_root, self.dev_root, self.proc_root)

    @property
    def kernel(self) -> FakeKernel:
        """Kernel actions on this tree (free numbers are read from the tree on each call)."""
        return FakeKernel(self.sysfs_root, self.dev_root)

    def device_path(self, bdf: str) -> str:
        """Absolute path of the device's real directory."""
        return os.path.join(self.sysfs_root, self.kernel.device_dir(bdf))

    def bind(self, bdf: str, driver: str) -> None:
        """Binds a device to a driver (see :meth:`FakeKernel.bind`)."""
        self.kernel.bind(bdf, driver)

    def unbind(self, bdf: str) -> None:
        """Unbinds a device from its driver."""
        self.kernel.unbind(bdf)

    def set_driver_override(self, bdf: str, driver: str | None) -> None:
        """Writes ``driver_override`` (None clears it)."""
        self.kernel.set_driver_override(bdf, driver)

    def remove_device(self, bdf: str) -> None:
        """Hot-removes a device and everything behind it."""
        self.kernel.remove(bdf)

    def add_device(self, dev: DeviceSpec, host: HostSpec | None = None) -> None:
        """Hot-adds a device under its parent bridge (or beside its PF), then joins its IOMMU
        group and binds its driver. ``host`` supplies host-wide settings (defaults to the
        spec the tree was built from, else the defaults of :class:`HostSpec`)."""
        settings = host or self.spec or HostSpec()
        add_device(self.kernel, settings, dev)


def build_host(root: str | os.PathLike[str], spec: HostSpec | Mapping[str, Any]) -> FakeHost:
    """Writes the fake host described by ``spec`` (a :class:`HostSpec` or its compact dict
    form) under ``root``, which must be empty or not exist yet."""
    host = spec if isinstance(spec, HostSpec) else host_from_dict(spec)
    base = os.fspath(root)
    if os.path.isdir(base) and os.listdir(base):
        raise InvalidInputError(
            f"fake host: {base} is not empty", hint="build into a new directory (tmp_path)"
        )
    fake = FakeHost.at(base)
    fake = FakeHost(fake.root, fake.sysfs_root, fake.dev_root, fake.proc_root, host)
    kernel = FakeKernel(fake.sysfs_root, fake.dev_root)
    kernel.start_batch()
    _write_skeleton(kernel, host)
    _write_proc(fake.proc_root, host)
    layout = _Layout(host)
    for slot, dev in enumerate(host.devices):
        _write_one(kernel, host, layout, dev, slot)
    for dev in host.devices:
        for index, vf in enumerate(host.virtfns(dev.bdf)):
            rel = layout.dirs[dev.bdf]
            _fs.link(kernel.sysfs, f"{rel}/virtfn{index}", layout.dirs[vf.bdf])
            _fs.link(kernel.sysfs, f"{layout.dirs[vf.bdf]}/physfn", rel)
    for dev in host.devices:
        if dev.driver is not None:
            kernel.bind(dev.bdf, dev.driver)
    for dev in host.devices:
        for name in dev.unreadable:
            make_unreadable(kernel.sys(layout.dirs[dev.bdf], name))
    kernel.end_batch()
    return fake


# The name the sample host's cache has always used: every kata-vfio version on a machine shares
# the cache directory, and they must agree on what an intact tree is.
_CACHE_MARKER = ".kata-vfio-sample"


def build_host_cached(cache_dir: str | os.PathLike[str], key: str, spec: HostSpec) -> FakeHost:
    """The fake host ``spec`` built once into ``<cache_dir>/<key>`` and reused while it is
    intact (the key is recorded beside the tree; every device directory must be there), or
    rebuilt and swapped in atomically. Treat the cached tree as shared: never mutate it."""
    cache = os.fspath(cache_dir)
    final = os.path.join(cache, key)
    if _is_intact(final, key, spec):
        return _attach(final, spec)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".building-", dir=cache)
    try:
        build_host(os.path.join(staging, "host"), spec)
        _fs.write(os.path.join(staging, "host", _CACHE_MARKER), key + "\n")
        if os.path.lexists(final):
            # Damaged: move it aside in one step, then put the new copy in its place.
            _fs.remove_tree_atomically(final, os.path.join(cache, ".trash"))
        try:
            os.rename(os.path.join(staging, "host"), final)
        except OSError:
            # Another process won the race; its copy is as good as ours.
            if not _is_intact(final, key, spec):
                raise
    finally:
        _fs.remove_tree(staging)
    return _attach(final, spec)


def _is_intact(path: str, key: str, spec: HostSpec) -> bool:
    if _fs.read(os.path.join(path, _CACHE_MARKER)).strip() != key:
        return False
    devices = os.path.join(path, "sys", "bus", "pci", "devices")
    try:
        present = set(os.listdir(devices))
    except OSError:
        return False
    return present == {d.bdf for d in spec.devices} and all(
        os.path.exists(os.path.join(devices, bdf, "uevent")) for bdf in present
    )


def _attach(path: str, spec: HostSpec) -> FakeHost:
    host = FakeHost.at(path)
    return FakeHost(host.root, host.sysfs_root, host.dev_root, host.proc_root, spec)


def add_device(kernel: FakeKernel, host: HostSpec, dev: DeviceSpec) -> None:
    """Hot-adds one function to an existing tree (see :meth:`FakeHost.add_device`)."""
    dev.validate()
    if kernel.has_device(dev.bdf):
        raise InvalidInputError(f"fake host: {dev.bdf} already exists")
    if dev.physfn is not None:
        parent_rel = posixpath.dirname(kernel.device_dir(dev.physfn))
    elif dev.parent is not None:
        parent_rel = kernel.device_dir(dev.parent)
    else:
        dom, bus, _d, _f = parse_bdf(dev.bdf)
        parent_rel = f"devices/pci{dom:04x}:{bus:02x}"
    dev_rel = f"{parent_rel}/{dev.bdf}"
    staging = new_staging_dir(kernel)
    staged_rel = posixpath.relpath(posixpath.join(staging, dev.bdf), kernel.sysfs)
    # Written aside, then renamed into place: readers never see a half-written device.
    write_device(
        kernel,
        host,
        dev,
        staged_rel,
        slot=0x10000 + (zlib.crc32(dev.bdf.encode()) & 0xFFFF),
        multifunction=False,
        parent=None,
        has_bridge_children=False,
        buses=None,
    )
    # The links written in staging are relative to the staging depth: redo them in place.
    _fs.makedirs(kernel.sys(parent_rel))
    os.rename(kernel.sys(staged_rel), kernel.sys(dev_rel))
    os.rmdir(staging)
    _fs.link(kernel.sysfs, f"{dev_rel}/subsystem", "bus/pci")
    _fs.unlink(kernel.sys(dev_rel, "iommu"))
    _fs.link(kernel.sysfs, f"bus/pci/devices/{dev.bdf}", dev_rel)
    if dev.physfn is not None:
        _attach_vf(kernel, dev, dev_rel)
    if dev.iommu_group is not None and host.iommu:
        _join_group(kernel, host, dev, dev_rel)
        units = iommu_units(host)
        _fs.link(kernel.sysfs, f"{dev_rel}/iommu", units[min(dev.numa_node or 0, len(units) - 1)])
    if dev.driver is not None:
        kernel.bind(dev.bdf, dev.driver)
    for name in dev.unreadable:
        make_unreadable(kernel.sys(dev_rel, name))


def _attach_vf(kernel: FakeKernel, vf: DeviceSpec, vf_rel: str) -> None:
    assert vf.physfn is not None
    pf_rel = kernel.device_dir(vf.physfn)
    pf_dir = kernel.sys(pf_rel)
    taken = {n for n in os.listdir(pf_dir) if n.startswith("virtfn")}
    index = next(i for i in range(len(taken) + 1) if f"virtfn{i}" not in taken)
    _fs.link(kernel.sysfs, f"{pf_rel}/virtfn{index}", vf_rel)
    _fs.link(kernel.sysfs, f"{vf_rel}/physfn", pf_rel)
    numvfs = os.path.join(pf_dir, "sriov_numvfs")
    if os.path.exists(numvfs):
        _fs.rewrite(numvfs, f"{len(taken) + 1}\n")


class _Layout:
    """Where each function's directory goes and the bus numbers of each bridge."""

    def __init__(self, host: HostSpec) -> None:
        self.host = host
        self.dirs: dict[str, str] = {}
        for dev in host.devices:  # numeric order puts every parent before its children
            parent = host.parent_of(dev)
            if parent is None:
                dom, bus, _d, _f = dev.key
                self.dirs[dev.bdf] = f"devices/pci{dom:04x}:{bus:02x}/{dev.bdf}"
            else:
                self.dirs[dev.bdf] = f"{self.dirs[parent]}/{dev.bdf}"
        slots: dict[tuple[int, int, int], int] = {}
        for dev in host.devices:
            if dev.physfn is None:
                slot = dev.key[:3]
                slots[slot] = slots.get(slot, 0) + 1
        self.multifunction = {
            d.bdf for d in host.devices if d.physfn is None and slots[d.key[:3]] > 1
        }

    def buses(self, dev: DeviceSpec) -> tuple[int, int, int] | None:
        """(primary, secondary, subordinate) of a bridge; None for other functions."""
        if not dev.is_bridge:
            return None
        children = self.host.children(dev.bdf)
        if not children:
            return (dev.key[1], 0, 0)
        secondary = min(c.key[1] for c in children)
        return (dev.key[1], secondary, self._subordinate(dev))

    def _subordinate(self, dev: DeviceSpec) -> int:
        highest = dev.key[1]
        for child in self.host.children(dev.bdf):
            highest = max(highest, child.key[1], self._subordinate(child))
        return highest


def _write_one(
    kernel: FakeKernel, host: HostSpec, layout: _Layout, dev: DeviceSpec, slot: int
) -> None:
    rel = layout.dirs[dev.bdf]
    parent_bdf = host.parent_of(dev)
    parent = host.device(parent_bdf) if parent_bdf is not None else None
    write_device(
        kernel,
        host,
        dev,
        rel,
        slot=slot,
        multifunction=dev.bdf in layout.multifunction,
        parent=parent,
        has_bridge_children=any(c.is_bridge for c in host.children(dev.bdf)),
        buses=layout.buses(dev),
        vfs=host.virtfns(dev.bdf),
    )
    _fs.link(kernel.sysfs, f"bus/pci/devices/{dev.bdf}", rel)
    if not host.iommu or dev.iommu_group is None:
        return
    if host.groups_dir:
        _join_group(kernel, host, dev, rel)
    else:
        # Only the device-side link, dangling, like the real snapshots in shared/data.
        _fs.link(kernel.sysfs, f"{rel}/iommu_group", f"kernel/iommu_groups/{dev.iommu_group}")


def _join_group(kernel: FakeKernel, host: HostSpec, dev: DeviceSpec, dev_rel: str) -> None:
    assert dev.iommu_group is not None
    kernel.join_group(
        dev.bdf,
        dev_rel,
        dev.iommu_group,
        domain_type=_domain_type(host),
        regions=_RESERVED_REGIONS[host.iommu_vendor] if host.reserved_regions else None,
    )


def _domain_type(host: HostSpec) -> str:
    cmdline = host.effective_cmdline().split()
    if "iommu=pt" in cmdline or "iommu.passthrough=1" in cmdline:
        return "identity"
    return "DMA" if host.iommu_vendor == "arm" else "DMA-FQ"


def _write_skeleton(kernel: FakeKernel, host: HostSpec) -> None:
    sys = kernel.sys
    for rel in ("bus/pci/devices", "bus/pci/drivers", "bus/pci/slots", "devices", "class/iommu"):
        _fs.makedirs(sys(rel))
    _fs.makedirs(sys("dev/char"))
    _fs.write(sys("bus/pci/drivers_probe"), "", _fs.WRITE_ONLY)
    _fs.write(sys("bus/pci/rescan"), "", _fs.WRITE_ONLY)
    _fs.write(sys("bus/pci/drivers_autoprobe"), "1\n", _fs.READ_WRITE)
    if host.groups_dir:
        _fs.makedirs(sys("kernel/iommu_groups"))
    if host.iommu:
        for unit in iommu_units(host):
            _fs.makedirs(sys(unit))
            _fs.write(sys(unit, "uevent"), "", _fs.READ_WRITE)
            _fs.link(kernel.sysfs, f"class/iommu/{posixpath.basename(unit)}", unit)
    if host.firmware_table:
        signature = _FIRMWARE_TABLE[host.iommu_vendor]
        _fs.makedirs(sys("firmware/acpi/tables"))
        _fs.write(sys("firmware/acpi/tables", signature), attrs.acpi_table(signature), 0o400)
    _write_vfio(kernel, host)
    dev_root = kernel.dev
    _fs.makedirs(dev_root)
    if host.noiommu:
        # The group directories appear as devices bind; the directory itself stays.
        _fs.makedirs(sys("kernel/iommu_groups"))
    for dev in host.devices:
        if dev.driver is not None:
            kernel.ensure_driver(dev.driver)
    if any(d.is_bridge for d in host.devices):
        kernel.ensure_driver("pcieport")


def _write_vfio(kernel: FakeKernel, host: HostSpec) -> None:
    if not host.vfio_loaded:
        return
    sys = kernel.sys
    modules = ["vfio", "vfio_pci", "vfio_pci_core"]
    if host.vfio_container:
        modules.append("vfio_iommu_type1")
    if host.cdev:
        modules.append("iommufd")
    for module in modules:
        kernel.ensure_module(module)
    _fs.makedirs(sys("module/vfio/parameters"))
    _fs.write(
        sys("module/vfio/parameters/enable_unsafe_noiommu_mode"),
        "Y\n" if host.noiommu else "N\n",
        _fs.READ_WRITE,
    )
    kernel.ensure_driver("vfio-pci")
    _fs.makedirs(sys("class/vfio"))
    _fs.makedirs(os.path.join(kernel.dev, "vfio"))
    if host.vfio_container:
        _misc_device(kernel, "vfio", VFIO_MISC_MINOR, "vfio/vfio", 0o666)
    if host.cdev:
        _fs.makedirs(sys("class/vfio-dev"))
        _fs.makedirs(os.path.join(kernel.dev, "vfio", "devices"))
        _misc_device(kernel, "iommu", IOMMUFD_MISC_MINOR, "iommu", 0o660)


def _misc_device(kernel: FakeKernel, name: str, minor: int, node: str, mode: int) -> None:
    kernel.add_char_device(f"devices/virtual/misc/{name}", "misc", (MISC_MAJOR, minor), node, mode)


def _write_proc(proc_root: str, host: HostSpec) -> None:
    _fs.makedirs(proc_root)
    _fs.write(os.path.join(proc_root, "cmdline"), host.effective_cmdline() + "\n")
