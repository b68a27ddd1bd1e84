"""What the kernel does to sysfs and devfs when devices appear, bind, unbind and go away.

:class:`FakeKernel` works on any tree (a built fake host, a restored snapshot): the state it
needs (cdev support, noiommu mode, free vfio minors) is read from the tree itself. Each action
follows the kernel's order, so a scanner running concurrently sees what it would see on a
real host:

- **bind** (``drivers/<drv>/bind``): refuse a bound device (EBUSY); a vfio driver needs an
  IOMMU group, or noiommu mode, which then gets a fresh fake group (EINVAL otherwise); then
  the ``driver`` link, the driver's ``<bdf>`` link, ``DRIVER=`` in ``uevent``; for vfio
  drivers the group node ``/dev/vfio/<N>`` (``noiommu-<N>``) when the group's first member
  binds, and with cdev support ``vfio-dev/vfioM`` (lowest free M), ``/sys/class/vfio-dev``,
  ``/sys/dev/char`` and ``/dev/vfio/devices/vfioM``.
- **unbind**: the same in reverse; the group node goes when no member is left on vfio.
- **remove** (``<dev>/remove``): children first (everything behind a bridge, the VFs of a
  PF), then per function: unbind, leave the IOMMU group (the group goes when empty), drop
  the ``bus/pci/devices`` link and the PF's ``virtfnN`` link, and take the directory away in
  one rename (kernfs removes a directory atomically for readers).
- **add** (a rescan or a new VF): the directory is written aside and renamed into place,
  then the bus link, the group membership and the driver binding follow.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import uuid
from collections.abc import Iterable

from kata_vfio.errors import HostIOError
from kata_vfio.testing import _fs, attrs
from kata_vfio.testing.spec import DeviceSpec, HostSpec, is_vfio_driver, parse_bdf

# Character device majors of the fake host; real ones are dynamic, these are typical.
VFIO_GROUP_MAJOR = 243
VFIO_CDEV_MAJOR = 511
MISC_MAJOR = 10
VFIO_MISC_MINOR = 196
IOMMUFD_MISC_MINOR = 123

# Drivers built into the kernel have no ``module`` link.
_BUILTIN_DRIVERS = frozenset({"pcieport", "pci-stub", "shpchp"})
_MODULE_OF_DRIVER = {"xhci_hcd": "xhci_pci", "ehci-pci": "ehci_pci", "vfio-pci": "vfio_pci"}
# Drivers that do not enable the device until it is opened (vfio) or at all (pci-stub).
_NON_ENABLING = frozenset({"pci-stub"})
_CDEV_RE = re.compile(r"^(?:noiommu-)?vfio(\d+)$")

TRASH_DIR = ".kata-vfio-trash"


def module_of(driver: str) -> str | None:
    """The module that registers ``driver`` (None for built-in drivers)."""
    if driver in _BUILTIN_DRIVERS:
        return None
    return _MODULE_OF_DRIVER.get(driver, driver.replace("-", "_"))


def _enoent(what: str, path: str) -> HostIOError:
    return HostIOError(f"{what}: no such device", errno=errno.ENODEV, path=path)


class FakeKernel:
    """Kernel actions on the fake tree under ``sysfs_root`` and ``dev_root``.

    Errors are :class:`kata_vfio.errors.HostIOError` with the errno the kernel's sysfs write
    would return (EBUSY, EINVAL, ENODEV).
    """

    def __init__(self, sysfs_root: str, dev_root: str) -> None:
        self.sysfs = os.fspath(sysfs_root)
        self.dev = os.fspath(dev_root)
        # Inside a build (start_batch) numbers are counted rather than read from the tree.
        self._batch = False
        self._cdev_next = 0
        self._group_minor_next = 0

    # --- paths --------------------------------------------------------------------------

    def sys(self, *rel: str) -> str:
        """An absolute path under the sysfs root."""
        return posixpath.join(self.sysfs, *rel)

    def device_dir(self, bdf: str) -> str:
        """The device's real directory relative to the sysfs root, from its bus link."""
        target = _fs.resolve_link(self.sysfs, f"bus/pci/devices/{bdf}")
        if target is None:
            raise _enoent(f"PCI device {bdf}", self.sys("bus/pci/devices", bdf))
        return target

    def has_device(self, bdf: str) -> bool:
        """Whether ``bus/pci/devices/<bdf>`` exists."""
        return os.path.lexists(self.sys("bus/pci/devices", bdf))

    def driver_of(self, bdf: str) -> str | None:
        """The bound driver's name, None when unbound."""
        target = _fs.resolve_link(self.sysfs, f"{self.device_dir(bdf)}/driver")
        return None if target is None else posixpath.basename(target)

    def group_of(self, bdf: str) -> int | None:
        """The IOMMU group number from the ``iommu_group`` link."""
        target = _fs.resolve_link(self.sysfs, f"{self.device_dir(bdf)}/iommu_group")
        return None if target is None else int(posixpath.basename(target))

    def cdev_support(self) -> bool:
        """vfio cdev support: ``class/vfio-dev`` exists."""
        return os.path.isdir(self.sys("class/vfio-dev"))

    def noiommu(self) -> bool:
        """vfio's ``enable_unsafe_noiommu_mode`` parameter reads Y."""
        param = self.sys("module/vfio/parameters/enable_unsafe_noiommu_mode")
        return _fs.read(param).strip() in ("Y", "1")

    # --- drivers ------------------------------------------------------------------------

    def ensure_driver(self, driver: str) -> None:
        """Registers a PCI driver (what loading its module does): ``bus/pci/drivers/<drv>``
        with bind, unbind, new_id, remove_id, uevent and the ``module`` link."""
        rel = f"bus/pci/drivers/{driver}"
        path = self.sys(rel)
        if os.path.isdir(path):
            return
        _fs.makedirs(path)
        for name in ("bind", "unbind", "new_id", "remove_id", "uevent"):
            _fs.write(posixpath.join(path, name), "", _fs.WRITE_ONLY)
        module = module_of(driver)
        if module is not None:
            self.ensure_module(module)
            _fs.link(self.sysfs, f"{rel}/module", f"module/{module}")

    def ensure_module(self, module: str) -> None:
        """``/sys/module/<name>`` of a loaded module."""
        path = self.sys("module", module)
        if not os.path.isdir(path):
            _fs.makedirs(path)
            _fs.write(posixpath.join(path, "initstate"), "live\n")
            _fs.write(posixpath.join(path, "refcnt"), "0\n")

    def set_driver_override(self, bdf: str, driver: str | None) -> None:
        """Writes ``driver_override`` (None clears it, which reads back ``(null)``)."""
        path = self.sys(self.device_dir(bdf), "driver_override")
        _fs.rewrite(path, attrs.override_text(driver))

    def bind(self, bdf: str, driver: str) -> None:
        """Binds ``bdf`` to ``driver`` (registering the driver if needed)."""
        dev_rel = self.device_dir(bdf)
        current = self.driver_of(bdf)
        if current is not None:
            raise HostIOError(
                f"{bdf} is already bound to {current}",
                errno=errno.EBUSY,
                path=self.sys("bus/pci/drivers", driver, "bind"),
            )
        vfio = is_vfio_driver(driver)
        group = self.group_of(bdf)
        if vfio and group is None:
            if not self.noiommu():
                raise HostIOError(
                    f"{driver}: {bdf} has no IOMMU group and noiommu mode is off",
                    errno=errno.EINVAL,
                    path=self.sys("bus/pci/drivers", driver, "bind"),
                )
            group = self._new_noiommu_group(bdf, dev_rel)
        self.ensure_driver(driver)
        _fs.link(self.sysfs, f"{dev_rel}/driver", f"bus/pci/drivers/{driver}")
        _fs.link(self.sysfs, f"bus/pci/drivers/{driver}/{bdf}", dev_rel)
        self._set_uevent_driver(dev_rel, driver)
        if driver not in _NON_ENABLING and not vfio:
            self._set_enable(dev_rel, "1")
        if vfio and group is not None:
            self._add_group_node(group)
            if self.cdev_support():
                self._add_cdev(bdf, dev_rel)

    def unbind(self, bdf: str) -> None:
        """Releases ``bdf`` from its driver; unbinding an unbound device does nothing."""
        dev_rel = self.device_dir(bdf)
        driver = self.driver_of(bdf)
        if driver is None:
            return
        if is_vfio_driver(driver):
            self._remove_cdevs(dev_rel)
        _fs.unlink(self.sys("bus/pci/drivers", driver, bdf))
        _fs.unlink(self.sys(dev_rel, "driver"))
        self._set_uevent_driver(dev_rel, None)
        self._set_enable(dev_rel, "0")
        if is_vfio_driver(driver):
            group = self.group_of(bdf)
            if group is not None and self._is_noiommu_group(group):
                self._leave_group(bdf, dev_rel, group)
            elif group is not None and not self._group_has_vfio_member(group):
                self._remove_group_node(group)

    def _set_enable(self, dev_rel: str, value: str) -> None:
        path = self.sys(dev_rel, "enable")
        if os.path.isfile(path):
            _fs.rewrite(path, f"{value}\n")

    def _set_uevent_driver(self, dev_rel: str, driver: str | None) -> None:
        path = self.sys(dev_rel, "uevent")
        if not os.path.isfile(path):
            return  # a tree without a readable uevent (a snapshot, an unreadable attribute)
        lines = [ln for ln in _fs.read(path).splitlines() if not ln.startswith("DRIVER=")]
        if driver is not None:
            lines.insert(0, f"DRIVER={driver}")
        _fs.rewrite(path, "\n".join(lines) + "\n")

    # --- IOMMU groups -------------------------------------------------------------------

    def join_group(
        self, bdf: str, dev_rel: str, group: int, *, domain_type: str, regions: str | None
    ) -> None:
        """Puts a device in IOMMU group ``group`` (creating the group directory)."""
        grp = f"kernel/iommu_groups/{group}"
        if not os.path.isdir(self.sys(grp)):
            _fs.makedirs(self.sys(grp, "devices"))
            _fs.write(self.sys(grp, "type"), f"{domain_type}\n", _fs.READ_WRITE)
            if regions is not None:
                _fs.write(self.sys(grp, "reserved_regions"), regions)
        _fs.link(self.sysfs, f"{grp}/devices/{bdf}", dev_rel)
        _fs.link(self.sysfs, f"{dev_rel}/iommu_group", grp)

    def _leave_group(self, bdf: str, dev_rel: str, group: int) -> None:
        grp = f"kernel/iommu_groups/{group}"
        _fs.unlink(self.sys(dev_rel, "iommu_group"))
        _fs.unlink(self.sys(grp, "devices", bdf))
        members = self._group_members(group)
        if not members and os.path.isdir(self.sys(grp)):
            self._remove_group_node(group)
            _fs.remove_tree(self.sys(grp))

    def _group_members(self, group: int) -> list[str]:
        try:
            return sorted(os.listdir(self.sys("kernel/iommu_groups", str(group), "devices")))
        except FileNotFoundError:
            return []

    def _group_has_vfio_member(self, group: int) -> bool:
        for member in self._group_members(group):
            target = _fs.resolve_link(
                self.sysfs, f"kernel/iommu_groups/{group}/devices/{member}/driver"
            )
            if target is not None and is_vfio_driver(posixpath.basename(target)):
                return True
        return False

    def _is_noiommu_group(self, group: int) -> bool:
        name = _fs.read(self.sys("kernel/iommu_groups", str(group), "name"))
        return name.strip() == "vfio-noiommu"

    def _new_noiommu_group(self, bdf: str, dev_rel: str) -> int:
        # vfio allocates a software group with the next free id.
        groups = self.sys("kernel/iommu_groups")
        _fs.makedirs(groups)
        taken = {int(n) for n in os.listdir(groups) if n.isdigit()}
        group = next(i for i in range(len(taken) + 1) if i not in taken)
        self.join_group(bdf, dev_rel, group, domain_type="unknown", regions="")
        _fs.write(self.sys("kernel/iommu_groups", str(group), "name"), "vfio-noiommu\n")
        return group

    def _group_node_name(self, group: int) -> str:
        return f"noiommu-{group}" if self._is_noiommu_group(group) else str(group)

    def _add_group_node(self, group: int) -> None:
        name = self._group_node_name(group)
        node = posixpath.join(self.dev, "vfio", name)
        if os.path.exists(node):
            return
        minor = self._next_group_minor()
        self.add_char_device(
            f"devices/virtual/vfio/{name}", "vfio", (VFIO_GROUP_MAJOR, minor), f"vfio/{name}", 0o600
        )

    def add_char_device(
        self, rel: str, class_name: str, number: tuple[int, int], devname: str, mode: int
    ) -> None:
        """A character device as the driver core shows it: its sysfs directory with ``dev``
        and ``uevent``, the ``class/<class>/<name>`` and ``dev/char/M:m`` links, and the
        ``/dev/<devname>`` node (a plain file)."""
        major, minor = number
        _fs.makedirs(self.sys(rel))
        _fs.write(self.sys(rel, "dev"), f"{major}:{minor}\n")
        _fs.write(
            self.sys(rel, "uevent"),
            f"MAJOR={major}\nMINOR={minor}\nDEVNAME={devname}\n",
            _fs.READ_WRITE,
        )
        _fs.makedirs(self.sys("class", class_name))
        _fs.link(self.sysfs, f"class/{class_name}/{posixpath.basename(rel)}", rel)
        _fs.makedirs(self.sys("dev/char"))
        _fs.link(self.sysfs, f"dev/char/{major}:{minor}", rel)
        node = posixpath.join(self.dev, devname)
        _fs.makedirs(posixpath.dirname(node))
        _fs.write(node, "", mode)

    def _remove_group_node(self, group: int) -> None:
        name = self._group_node_name(group)
        _fs.unlink(posixpath.join(self.dev, "vfio", name))
        rel = f"devices/virtual/vfio/{name}"
        dev_text = _fs.read(self.sys(rel, "dev")).strip()
        if dev_text:
            _fs.unlink(self.sys("dev/char", dev_text))
        _fs.unlink(self.sys("class/vfio", name))
        if os.path.isdir(self.sys(rel)):
            _fs.remove_tree(self.sys(rel))

    def _next_group_minor(self) -> int:
        if self._batch:
            self._group_minor_next += 1
            return self._group_minor_next - 1
        used = set()
        base = self.sys("devices/virtual/vfio")
        for name in os.listdir(base) if os.path.isdir(base) else ():
            text = _fs.read(posixpath.join(base, name, "dev")).strip()
            if ":" in text:
                used.add(int(text.split(":")[1]))
        return _lowest_free(used)

    # --- vfio cdevs ---------------------------------------------------------------------

    def _add_cdev(self, bdf: str, dev_rel: str) -> None:
        index = self._next_cdev_index()
        name = f"{'noiommu-' if self.noiommu() else ''}vfio{index}"
        rel = f"{dev_rel}/vfio-dev/{name}"
        self.add_char_device(
            rel, "vfio-dev", (VFIO_CDEV_MAJOR, index), f"vfio/devices/{name}", 0o600
        )
        _fs.link(self.sysfs, f"{rel}/device", dev_rel)
        _fs.link(self.sysfs, f"{rel}/subsystem", "class/vfio-dev")

    def _remove_cdevs(self, dev_rel: str) -> None:
        base = self.sys(dev_rel, "vfio-dev")
        if not os.path.isdir(base):
            return
        for name in os.listdir(base):
            match = _CDEV_RE.match(name)
            if match is None:
                continue
            _fs.unlink(posixpath.join(self.dev, "vfio/devices", name))
            _fs.unlink(self.sys("dev/char", f"{VFIO_CDEV_MAJOR}:{match.group(1)}"))
            _fs.unlink(self.sys("class/vfio-dev", name))
        _fs.remove_tree(base)

    def _next_cdev_index(self) -> int:
        if self._batch:
            self._cdev_next += 1
            return self._cdev_next - 1
        used = set()
        for name in os.listdir(self.sys("class/vfio-dev")):
            match = _CDEV_RE.match(name)
            if match is not None:
                used.add(int(match.group(1)))
        return _lowest_free(used)

    def start_batch(self) -> None:
        """Inside one build nothing frees numbers: count instead of re-reading the tree."""
        self._batch = True
        self._cdev_next = 0
        self._group_minor_next = 0

    def end_batch(self) -> None:
        """Back to reading free numbers from the tree (other writers may change it)."""
        self._batch = False

    # --- devices appear and go away -----------------------------------------------------

    def remove(self, bdf: str) -> None:
        """Hot-removes ``bdf`` and everything behind it (see the module docs for the order)."""
        dev_rel = self.device_dir(bdf)
        for child in self._dependents(bdf, dev_rel):
            if self.has_device(child):
                self.remove(child)
        self.unbind(bdf)
        group = self.group_of(bdf)
        if group is not None:
            self._leave_group(bdf, dev_rel, group)
        _fs.unlink(self.sys("bus/pci/devices", bdf))
        pf = _fs.resolve_link(self.sysfs, f"{dev_rel}/physfn")
        if pf is not None:
            self._drop_virtfn(pf, dev_rel)
        _fs.remove_tree_atomically(self.sys(dev_rel), self.sys(TRASH_DIR))

    def _dependents(self, bdf: str, dev_rel: str) -> list[str]:
        """Functions that go with ``bdf``: its VFs and every function behind it, deepest
        first so that removal order matches the kernel's."""
        found = []
        base = self.sys(dev_rel)
        for name in sorted(os.listdir(base), key=_bdf_or_last):
            path = posixpath.join(base, name)
            if name.startswith("virtfn") and os.path.islink(path):
                found.append(posixpath.basename(os.readlink(path)))
            elif _looks_like_bdf(name) and os.path.isdir(path) and not os.path.islink(path):
                found.append(name)
        return found

    def _drop_virtfn(self, pf_rel: str, vf_rel: str) -> None:
        pf_dir = self.sys(pf_rel)
        if not os.path.isdir(pf_dir):
            return
        for name in os.listdir(pf_dir):
            if name.startswith("virtfn"):
                target = _fs.resolve_link(self.sysfs, f"{pf_rel}/{name}")
                if target == vf_rel:
                    _fs.unlink(posixpath.join(pf_dir, name))
        numvfs = self.sys(pf_rel, "sriov_numvfs")
        if os.path.exists(numvfs):
            count = sum(1 for n in os.listdir(pf_dir) if n.startswith("virtfn"))
            _fs.rewrite(numvfs, f"{count}\n")

    def trash(self) -> str:
        """Where removed directories go before deletion (outside bus/ and devices/)."""
        return self.sys(TRASH_DIR)


def _lowest_free(used: set[int]) -> int:
    # ida_alloc: the lowest number not in use.
    return next(i for i in range(len(used) + 1) if i not in used)


def _looks_like_bdf(name: str) -> bool:
    try:
        parse_bdf(name)
    except ValueError:
        return False
    return True


def _bdf_or_last(name: str) -> tuple[int, ...]:
    try:
        return (0, *parse_bdf(name))
    except ValueError:
        return (1,)


def write_device(
    kernel: FakeKernel,
    host: HostSpec,
    dev: DeviceSpec,
    dev_rel: str,
    *,
    slot: int,
    multifunction: bool,
    parent: DeviceSpec | None,
    has_bridge_children: bool,
    buses: tuple[int, int, int] | None,
    vfs: Iterable[DeviceSpec] = (),
) -> None:
    """Writes one unbound device directory at ``dev_rel`` (attributes, ``subsystem`` and
    ``iommu`` links, SR-IOV files) — the part of the device that exists before any driver
    binds. ``virtfnN`` links are written by the caller once the VFs exist, and unreadable
    attributes are made so once the driver is bound (:func:`make_unreadable`)."""
    path = kernel.sys(dev_rel)
    _fs.makedirs(path)
    bars = attrs.place_bars(dev.bars, slot)
    irq = 0 if dev.is_host_bridge else 16 + slot % 200
    node = dev.numa_node
    first_cpu, cpus = (
        (node * host.cpus_per_node, host.cpus_per_node)
        if node is not None
        else (0, host.cpus_per_node * host.numa_nodes)
    )
    files: dict[str, str | bytes] = {
        "vendor": attrs.hex16(dev.vendor),
        "device": attrs.hex16(dev.device),
        "subsystem_vendor": attrs.hex16(dev.subsystem_vendor),
        "subsystem_device": attrs.hex16(dev.subsystem_device),
        "class": attrs.class_text(dev.class_code),
        "revision": attrs.revision_text(dev.revision),
        "uevent": attrs.uevent(dev, None),
        "modalias": attrs.modalias(dev) + "\n",
        "numa_node": attrs.numa_text(node),
        "local_cpulist": attrs.cpulist(first_cpu, cpus),
        "irq": f"{irq}\n",
        "enable": "0\n",
        "driver_override": attrs.override_text(dev.driver_override),
        "msi_bus": "1\n",
        "broken_parity_status": "0\n",
        "power_state": "D0\n",
        "dma_mask_bits": "64\n",
        "consistent_dma_mask_bits": "64\n",
        "resource": attrs.resource(bars, dev.is_bridge),
        "config": attrs.config_space(
            dev,
            multifunction=multifunction,
            enabled=dev.driver is not None and not is_vfio_driver(dev.driver),
            bars=bars,
            buses=buses,
            port_type=attrs.pcie_port_type(dev, parent, has_bridge_children),
            irq=irq,
        ),
    }
    if dev.class_code >> 8 == 0x0300:  # the kernel shows boot_vga on VGA functions only
        files["boot_vga"] = "1\n" if dev.boot_vga else "0\n"
    if dev.pcie:
        files["d3cold_allowed"] = "1\n"
    if dev.reset_methods:
        files["reset_method"] = " ".join(dev.reset_methods) + "\n"
    if dev.link is not None:
        files["current_link_speed"] = attrs.link_speed_text(dev.link.current_speed)
        files["current_link_width"] = f"{dev.link.current_width}\n"
        files["max_link_speed"] = attrs.link_speed_text(dev.link.max_speed)
        files["max_link_width"] = f"{dev.link.max_width}\n"
    if dev.is_bridge and buses is not None:
        files["secondary_bus_number"] = f"{buses[1]}\n"
        files["subordinate_bus_number"] = f"{buses[2]}\n"
    vf_list = list(vfs)
    if dev.sriov_totalvfs is not None:
        files.update(_sriov_files(dev, vf_list))
    writable = {"driver_override", "enable", "numa_node", "reset_method", "sriov_numvfs"}
    writable.update({"d3cold_allowed", "msi_bus", "broken_parity_status"})
    for name, content in files.items():
        if name in dev.missing:
            continue
        mode = _fs.READ_WRITE if name in writable else _fs.READ_ONLY
        if name == "config":
            mode = _fs.READ_WRITE
        _fs.write(posixpath.join(path, name), content, mode)
    for name in ("remove", "rescan", *(("reset",) if dev.reset_methods else ())):
        if name not in dev.missing:
            _fs.write(posixpath.join(path, name), "", _fs.WRITE_ONLY)
    _fs.link(kernel.sysfs, f"{dev_rel}/subsystem", "bus/pci")
    iommu_unit = _iommu_unit(host, dev)
    if iommu_unit is not None and dev.iommu_group is not None:
        _fs.link(kernel.sysfs, f"{dev_rel}/iommu", iommu_unit)


def _sriov_files(pf: DeviceSpec, vfs: list[DeviceSpec]) -> dict[str, str | bytes]:
    def routing_id(bdf: str) -> int:
        _dom, bus, dev, fn = parse_bdf(bdf)
        return bus << 8 | dev << 3 | fn

    offset, stride = 1, 1
    if vfs:
        offset = routing_id(vfs[0].bdf) - routing_id(pf.bdf)
        if len(vfs) > 1:
            stride = routing_id(vfs[1].bdf) - routing_id(vfs[0].bdf)
    vf_device = vfs[0].device if vfs else pf.device
    return {
        "sriov_totalvfs": f"{pf.sriov_totalvfs}\n",
        "sriov_numvfs": f"{len(vfs)}\n",
        "sriov_offset": f"{offset}\n",
        "sriov_stride": f"{stride}\n",
        "sriov_vf_device": f"{vf_device:x}\n",
        "sriov_drivers_autoprobe": "1\n",
    }


def make_unreadable(path: str) -> None:
    """Makes an attribute exist but fail to read. ``config`` keeps its size for ``stat`` and
    only loses its permissions. For other attributes, mode 000 stops a normal user but not
    root (CAP_DAC_OVERRIDE), so when running as root the file becomes a mode-000 directory:
    ``open`` then succeeds and ``read`` fails (EISDIR), like an attribute whose show()
    returns an error."""
    if os.path.basename(path) == "config" or os.geteuid() != 0:
        if not os.path.exists(path):
            _fs.write(path, "")
        os.chmod(path, 0)
        return
    _fs.unlink(path)
    os.mkdir(path, 0)


def _iommu_unit(host: HostSpec, dev: DeviceSpec) -> str | None:
    """The ``iommu`` link target of a device (relative to the sysfs root)."""
    if not host.iommu:
        return None
    units = iommu_units(host)
    return units[min(dev.numa_node or 0, len(units) - 1)]


def iommu_units(host: HostSpec) -> list[str]:
    """The IOMMU hardware units' directories (one per NUMA node), relative to sysfs."""
    count = host.numa_nodes
    if host.iommu_vendor == "intel":
        return [f"devices/virtual/iommu/dmar{i}" for i in range(count)]
    if host.iommu_vendor == "amd":
        return [f"devices/virtual/iommu/ivhd{i}" for i in range(count)]
    return [
        f"devices/platform/arm-smmu-v3.{i}.auto/iommu/smmu3.0x{0x09050000 + i * 0x20000:016x}"
        for i in range(count)
    ]


def new_staging_dir(kernel: FakeKernel) -> str:
    """A directory on the same filesystem for writing a device before it appears."""
    path = kernel.sys(TRASH_DIR, f"staging-{uuid.uuid4().hex}")
    _fs.makedirs(path)
    return path
