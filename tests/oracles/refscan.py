"""An independent pure-Python scanner with the semantics of :func:`kata_vfio.scan`.

It is the differential oracle for the Rust core and the "best Python" contender in the
benchmarks, so it is written the way Python reads sysfs fastest: every path is opened
relative to a directory fd (``os.open(..., dir_fd=)``, ``os.readlink(..., dir_fd=)``), the
IDs, class and driver come from one ``uevent`` read, the PCIe rule is an ``lstat`` of
``config`` (never read), IOMMU groups come from the ``kernel/iommu_groups`` listing when it
exists and from each device's ``iommu_group`` link otherwise. It shares no code with the Rust
core; where the two disagree one of them has a bug.

Semantics (the kernel's, as :mod:`kata_vfio._core` documents them):

- a device is listed when its ``bus/pci/devices`` entry parses as an address and its vendor,
  device and class can be read (``uevent``, else ``modalias``, else the single files); one
  that vanishes mid-scan is left out, an unreadable optional attribute is ``None``;
- ``upstream`` are the addresses among the components of the bus link's target, root first;
  ``physfn`` is read from the VF's own ``physfn`` link, ``virtfns`` from ``virtfnN`` links;
- a group is *viable* when no member is an endpoint on a host driver or a bridge on a driver
  other than pcieport/vfio/pci-stub; it is *assignable* when it is viable, has endpoints and
  every endpoint is on a vfio driver;
- vfio's noiommu groups (``name`` reads ``vfio-noiommu``) are not evidence of an IOMMU, and
  a cdev in noiommu mode is named ``noiommu-vfioN`` (drivers/vfio/vfio_main.c).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

_BDF_RE = re.compile(r"^([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$")
_SHORT_BDF_RE = re.compile(r"^([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$")
_CDEV_RE = re.compile(r"^(?:noiommu-)?vfio(0|[1-9][0-9]*)$")
_DEC_RE = re.compile(r"^(0|[1-9][0-9]*)$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY
_ATTR_MAX = 4096
_CONVENTIONAL_CONFIG = 256
_LARGE_BAR = 1 << 32
_IORESOURCE_IO = 0x100
_IORESOURCE_MEM = 0x200
_IORESOURCE_PREFETCH = 0x2000
_IORESOURCE_MEM_64 = 0x100000
_CMDLINE_KEYS = frozenset(
    {
        "intel_iommu", "amd_iommu", "iommu", "iommufd", "vfio", "vfio-pci", "vfio_pci",
        "vfio_iommu_type1", "pcie_acs_override", "rd.driver.pre",
    }
)  # fmt: skip


def bdf_key(text: str) -> tuple[int, int, int, int]:
    """Numeric sort key of an address (``ValueError`` when it is not one)."""
    match = _BDF_RE.match(text)
    if match is None:
        short = _SHORT_BDF_RE.match(text)
        if short is None:
            raise ValueError(f"not a PCI address: {text!r}")
        groups: tuple[str, ...] = ("0", *short.groups())
    else:
        groups = match.groups()
    dom, bus, dev, fn = (int(g, 16) for g in groups)
    if dev > 0x1F:
        raise ValueError(f"device number above 1f: {text!r}")
    return dom, bus, dev, fn


def canonical_bdf(text: str) -> str | None:
    """``dddd:bb:dd.f`` in lower case, or None when ``text`` is not an address."""
    try:
        dom, bus, dev, fn = bdf_key(text)
    except ValueError:
        return None
    return f"{dom:04x}:{bus:02x}:{dev:02x}.{fn:x}"


def is_vfio_driver(driver: str | None) -> bool:
    """vfio-pci or a variant driver built on vfio-pci-core."""
    return driver is not None and (
        driver == "vfio-pci" or driver.endswith(("_vfio_pci", "-vfio-pci"))
    )


def _is_dma_safe(driver: str) -> bool:
    # The PCI drivers with driver_managed_dma set: vfio drivers, pci-stub, pcieport.
    return is_vfio_driver(driver) or driver in ("pci-stub", "pcieport")


# --- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RefBar:
    """One non-empty BAR from ``resource``."""

    index: int
    start: int
    size: int
    is_io: bool
    is_64bit: bool
    prefetchable: bool


@dataclass(frozen=True)
class RefLink:
    """PCIe link attributes as printed by sysfs."""

    current_speed: str | None
    current_width: int | None
    max_speed: str | None
    max_width: int | None


class ClassRoles:
    """What a 24-bit class code says about a function's role in an IOMMU group (the
    oracle's own copy: it shares no code with the Rust core or the fake-host builder)."""

    class_code: int

    @property
    def is_bridge(self) -> bool:
        """Class 0x0604xx: a PCI-to-PCI bridge, PCIe root or switch port."""
        return self.class_code >> 8 == 0x0604

    @property
    def is_host_bridge(self) -> bool:
        """Class 0x0600xx."""
        return self.class_code >> 8 == 0x0600

    @property
    def is_endpoint(self) -> bool:
        """Neither kind of bridge (NVSwitch-like 0x0680 counts as an endpoint)."""
        return not self.is_bridge and not self.is_host_bridge


@dataclass(frozen=True)
class RefDevice(ClassRoles):
    """One PCI function (the fields of :class:`kata_vfio.PciDevice`, addresses as text)."""

    bdf: str
    vendor: int
    device: int
    subsystem_vendor: int | None
    subsystem_device: int | None
    class_code: int
    revision: int | None
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    numa_node: int | None
    physfn: str | None
    virtfns: tuple[str, ...]
    sriov_totalvfs: int | None
    sriov_numvfs: int | None
    upstream: tuple[str, ...]
    is_pcie: bool
    vfio_cdev: str | None
    sysfs_path: str
    bars: tuple[RefBar, ...] | None = None
    reset_methods: tuple[str, ...] | None = None
    link: RefLink | None = None

    @property
    def is_vfio_bound(self) -> bool:
        """On vfio-pci or a variant driver."""
        return is_vfio_driver(self.driver)

    @property
    def large_bar(self) -> bool | None:
        """A memory BAR of 4 GiB or more; None without details."""
        if self.bars is None:
            return None
        return any(not bar.is_io and bar.size >= _LARGE_BAR for bar in self.bars)


@dataclass(frozen=True)
class RefBlocker:
    """A member that keeps its group from being assignable."""

    bdf: str
    driver: str | None
    reason: str
    breaks_viability: bool


@dataclass(frozen=True)
class RefGroup:
    """An IOMMU group and its verdict."""

    id: int
    devices: tuple[str, ...]
    endpoints: tuple[str, ...]
    viable: bool
    assignable: bool
    blockers: tuple[RefBlocker, ...]


@dataclass(frozen=True)
class RefStatus:
    """The host's IOMMU and VFIO state (the fields of :class:`kata_vfio.IommuStatus`)."""

    enabled: bool
    reasons: tuple[str, ...]
    group_count: int
    iommu_class: tuple[str, ...]
    firmware_tables: tuple[str, ...]
    cmdline: tuple[str, ...] | None
    cpu_vendor: str | None
    vfio_module: bool
    vfio_pci_driver: bool
    iommufd_module: bool
    vfio_container_node: bool
    iommufd_node: bool
    noiommu: bool


@dataclass(frozen=True)
class RefHost:
    """A scanned host."""

    sysfs_root: str
    dev_root: str
    devices: tuple[RefDevice, ...]
    groups: tuple[RefGroup, ...]
    iommu: RefStatus
    has_details: bool

    def find_device(self, bdf: str) -> RefDevice | None:
        """The device at ``bdf`` (any accepted spelling), or None."""
        want = canonical_bdf(bdf)
        return next((d for d in self.devices if d.bdf == want), None)

    def find_group(self, group_id: int) -> RefGroup | None:
        """The group ``group_id``, or None."""
        return next((g for g in self.groups if g.id == group_id), None)


# --- low-level reads --------------------------------------------------------------------


def _read(dir_fd: int, name: str) -> str | None:
    """One attribute as stripped text: one open, one read, one close; None on any failure."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        data = os.read(fd, _ATTR_MAX)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


def _readlink(dir_fd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _listdir(dir_fd: int, name: str) -> list[str] | None:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.listdir(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _hex(text: str | None, limit: int) -> int | None:
    if text is None or text[:2] not in ("0x", "0X") or not 2 < len(text) <= 10:
        return None
    try:
        value = int(text[2:], 16)
    except ValueError:
        return None
    return value if value <= limit else None


def _dec(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if value >= 0 and text.lstrip("+").isdigit() else None


def _resolve(base: str, target: str) -> str:
    """A relative link target resolved lexically against the link's directory."""
    if target.startswith("/"):
        return target
    parts = [p for p in base.split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


# --- one device -------------------------------------------------------------------------


@dataclass
class _Ids:
    vendor: int | None = None
    device: int | None = None
    class_code: int | None = None
    subsystem_vendor: int | None = None
    subsystem_device: int | None = None
    driver: str | None = None

    def complete(self) -> bool:
        return None not in (self.vendor, self.device, self.class_code)


def _id_pair(value: str) -> tuple[int | None, int | None]:
    left, sep, right = value.partition(":")
    if not sep:
        return None, None

    def one(text: str) -> int | None:
        if not 0 < len(text) <= 4:
            return None
        try:
            return int(text, 16)
        except ValueError:
            return None

    return one(left), one(right)


def _parse_uevent(text: str) -> _Ids:
    ids = _Ids()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "DRIVER" and value:
            ids.driver = value
        elif key == "PCI_CLASS":
            try:
                klass = int(value, 16)
            except ValueError:
                klass = -1
            ids.class_code = klass if 0 <= klass <= 0xFFFFFF else None
        elif key == "PCI_ID":
            ids.vendor, ids.device = _id_pair(value)
        elif key == "PCI_SUBSYS_ID":
            ids.subsystem_vendor, ids.subsystem_device = _id_pair(value)
    return ids


_MODALIAS_RE = re.compile(
    r"^pci:v([0-9A-Fa-f]{8})d([0-9A-Fa-f]{8})"
    r"(?:sv([0-9A-Fa-f]{8})sd([0-9A-Fa-f]{8})"
    r"(?:bc([0-9A-Fa-f]{2})sc([0-9A-Fa-f]{2})i([0-9A-Fa-f]{2}))?)?"
)


def _fill_from_modalias(ids: _Ids, text: str | None) -> None:
    match = _MODALIAS_RE.match(text or "")
    if match is None:
        return
    v, d, sv, sd, bc, sc, pi = match.groups()

    def u16(x: str | None) -> int | None:
        value = None if x is None else int(x, 16)
        return value if value is not None and value <= 0xFFFF else None

    ids.vendor = ids.vendor if ids.vendor is not None else u16(v)
    ids.device = ids.device if ids.device is not None else u16(d)
    ids.subsystem_vendor = ids.subsystem_vendor if ids.subsystem_vendor is not None else u16(sv)
    ids.subsystem_device = ids.subsystem_device if ids.subsystem_device is not None else u16(sd)
    if ids.class_code is None and bc is not None:
        ids.class_code = int(bc, 16) << 16 | int(sc, 16) << 8 | int(pi, 16)


def _read_ids(dfd: int) -> tuple[_Ids, bool] | None:
    text = _read(dfd, "uevent")
    ids = _parse_uevent(text) if text is not None else _Ids()
    if not ids.complete():
        _fill_from_modalias(ids, _read(dfd, "modalias"))
    if not ids.complete():
        if ids.vendor is None:
            ids.vendor = _hex(_read(dfd, "vendor"), 0xFFFF)
        if ids.device is None:
            ids.device = _hex(_read(dfd, "device"), 0xFFFF)
        if ids.class_code is None:
            ids.class_code = _hex(_read(dfd, "class"), 0xFFFFFF)
    if not ids.complete():
        return None
    if ids.subsystem_vendor is None:
        ids.subsystem_vendor = _hex(_read(dfd, "subsystem_vendor"), 0xFFFF)
    if ids.subsystem_device is None:
        ids.subsystem_device = _hex(_read(dfd, "subsystem_device"), 0xFFFF)
    return ids, text is not None


def _read_cdev(dfd: int) -> str | None:
    names = _listdir(dfd, "vfio-dev")
    if not names:
        return None
    cdevs = [(int(m.group(1)), n) for n in names if (m := _CDEV_RE.match(n)) is not None]
    return min(cdevs)[1] if cdevs else None


def _read_virtfns(dfd: int) -> tuple[int | None, tuple[str, ...]]:
    """``sriov_numvfs`` and the VFs; when the count cannot be read the ``virtfnN`` links are
    followed up to the first missing one."""
    numvfs = _dec(_read(dfd, "sriov_numvfs"))
    found: set[str] = set()
    index = 0
    while numvfs is None or index < numvfs:
        target = _readlink(dfd, f"virtfn{index}")
        if target is None and numvfs is None:
            break
        bdf = canonical_bdf(posixpath.basename(target)) if target else None
        if bdf is not None:
            found.add(bdf)
        index += 1
    return numvfs, tuple(sorted(found, key=bdf_key))


def _is_pf(dfd: int) -> bool:
    """Only PFs have ``sriov_totalvfs`` (readable or not)."""
    try:
        os.stat("sriov_totalvfs", dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _read_details(dfd: int) -> tuple[tuple[RefBar, ...], tuple[str, ...] | None, RefLink | None]:
    bars: list[RefBar] = []
    for index, line in enumerate((_read(dfd, "resource") or "").splitlines()[:6]):
        fields = line.split()
        if len(fields) < 3 or not all(f.startswith("0x") for f in fields[:3]):
            continue
        try:
            start, end, flags = (int(f, 16) for f in fields[:3])
        except ValueError:
            continue
        if end == 0 or end < start or not flags & (_IORESOURCE_IO | _IORESOURCE_MEM):
            continue
        bars.append(
            RefBar(
                index=index,
                start=start,
                size=end - start + 1,
                is_io=bool(flags & _IORESOURCE_IO),
                is_64bit=bool(flags & _IORESOURCE_MEM_64),
                prefetchable=bool(flags & _IORESOURCE_PREFETCH),
            )
        )
    reset = _read(dfd, "reset_method")
    link = RefLink(
        current_speed=_speed(_read(dfd, "current_link_speed")),
        current_width=_width(_read(dfd, "current_link_width")),
        max_speed=_speed(_read(dfd, "max_link_speed")),
        max_width=_width(_read(dfd, "max_link_width")),
    )
    empty = RefLink(None, None, None, None)
    return (
        tuple(bars),
        None if reset is None else tuple(reset.split()),
        (None if link == empty else link),
    )


def _speed(text: str | None) -> str | None:
    return None if not text or text.startswith("Unknown") else text


def _width(text: str | None) -> int | None:
    value = _dec(text)
    return value if value else None


def _read_device(
    devices_fd: int, name: str, bdf: str, groups: dict[str, int] | None, details: bool
) -> RefDevice | None:
    target = _readlink(devices_fd, name)
    if target is None:
        return None
    try:
        dfd = os.open(name, _PATH_FLAGS, dir_fd=devices_fd)
    except OSError:
        return None
    try:
        return _read_device_at(dfd, bdf, _resolve("bus/pci/devices", target), groups, details)
    finally:
        os.close(dfd)


def _read_device_at(
    dfd: int, bdf: str, sysfs_path: str, groups: dict[str, int] | None, details: bool
) -> RefDevice | None:
    found = _read_ids(dfd)
    if found is None:
        return None
    ids, from_uevent = found
    driver = ids.driver
    if not from_uevent:
        driver_link = _readlink(dfd, "driver")
        driver = posixpath.basename(driver_link) if driver_link else None
    numa = _read(dfd, "numa_node")
    numa_node = None
    if numa is not None and re.fullmatch(r"[+-]?\d+", numa):
        numa_node = int(numa) if int(numa) >= 0 else None
    override = _read(dfd, "driver_override")
    if groups is not None:
        group = groups.get(bdf)
    else:
        group_link = _readlink(dfd, "iommu_group")
        group = _dec(posixpath.basename(group_link)) if group_link else None
    try:
        is_pcie = os.stat("config", dir_fd=dfd, follow_symlinks=False).st_size > (
            _CONVENTIONAL_CONFIG
        )
    except OSError:
        is_pcie = False
    totalvfs = _dec(_read(dfd, "sriov_totalvfs"))
    is_pf = totalvfs is not None or _is_pf(dfd)
    numvfs, virtfns = _read_virtfns(dfd) if is_pf else (None, ())
    physfn_link = _readlink(dfd, "physfn")
    upstream = tuple(b for b in map(canonical_bdf, sysfs_path.split("/")) if b is not None)
    if upstream and upstream[-1] == bdf:
        upstream = upstream[:-1]
    bars, reset, link = _read_details(dfd) if details else (None, None, None)
    revision = _hex(_read(dfd, "revision"), 0xFF)
    assert ids.vendor is not None
    assert ids.device is not None
    assert ids.class_code is not None
    return RefDevice(
        bdf=bdf,
        vendor=ids.vendor,
        device=ids.device,
        subsystem_vendor=ids.subsystem_vendor,
        subsystem_device=ids.subsystem_device,
        class_code=ids.class_code,
        revision=revision,
        driver=driver,
        driver_override=None if override in (None, "", "(null)") else override,
        iommu_group=group,
        numa_node=numa_node,
        physfn=canonical_bdf(posixpath.basename(physfn_link)) if physfn_link else None,
        virtfns=virtfns,
        sriov_totalvfs=totalvfs,
        sriov_numvfs=numvfs,
        upstream=upstream,
        is_pcie=is_pcie,
        vfio_cdev=_read_cdev(dfd) if is_vfio_driver(driver) else None,
        sysfs_path=sysfs_path,
        bars=bars,
        reset_methods=reset,
        link=link,
    )


# --- groups -----------------------------------------------------------------------------


def _group_listing(root_fd: int) -> dict[int, list[str]] | None:
    names = _listdir(root_fd, "kernel/iommu_groups")
    if names is None:
        return None
    listing: dict[int, list[str]] = {}
    for name in names:
        number = _dec(name) if _DEC_RE.match(name) else None
        if number is None:
            continue
        members = _listdir(root_fd, f"kernel/iommu_groups/{name}/devices")
        if members is None:
            continue
        listing[number] = [b for b in map(canonical_bdf, members) if b is not None]
    return listing


def _blocker(dev: RefDevice) -> RefBlocker | None:
    driver = dev.driver
    if is_vfio_driver(driver):
        return None
    if not dev.is_endpoint:
        if driver is None or _is_dma_safe(driver):
            return None
        return RefBlocker(dev.bdf, driver, f"bridge on {driver}, which uses DMA", True)
    if driver is None:
        return RefBlocker(dev.bdf, None, "endpoint has no driver", False)
    if driver == "pci-stub":
        return RefBlocker(dev.bdf, driver, "endpoint on pci-stub", False)
    return RefBlocker(dev.bdf, driver, f"endpoint on host driver {driver}", True)


def _judge(group_id: int, members: Iterable[str], by_bdf: dict[str, RefDevice]) -> RefGroup:
    devices = tuple(sorted(set(members), key=bdf_key))
    known = [by_bdf[b] for b in devices if b in by_bdf]
    endpoints = tuple(d.bdf for d in known if d.is_endpoint)
    blockers = tuple(b for b in map(_blocker, known) if b is not None)
    viable = not any(b.breaks_viability for b in blockers)
    return RefGroup(
        id=group_id,
        devices=devices,
        endpoints=endpoints,
        viable=viable,
        assignable=viable and bool(endpoints) and not blockers,
        blockers=blockers,
    )


# --- host status ------------------------------------------------------------------------


def _status(
    root_fd: int,
    *,
    dev_root: str,
    proc_root: str | None,
    listed: int | None,
    linked: int,
    noiommu_groups: int,
) -> RefStatus:
    iommu_class = tuple(sorted(_listdir(root_fd, "class/iommu") or ()))
    tables = tuple(
        t for t in ("DMAR", "IVRS", "IORT") if _exists(root_fd, f"firmware/acpi/tables/{t}")
    )
    cmdline = None
    if proc_root is not None:
        try:
            with open(os.path.join(proc_root, "cmdline"), encoding="utf-8") as f:
                cmdline = tuple(a for a in f.read().split() if _iommu_argument(a))
        except (OSError, UnicodeDecodeError):
            cmdline = None
    vendor = _vendor(tables, iommu_class)
    param = _read(root_fd, "module/vfio/parameters/enable_unsafe_noiommu_mode")
    try:
        dev_vfio = os.listdir(os.path.join(dev_root, "vfio"))
    except OSError:
        dev_vfio = []
    noiommu = param in ("Y", "1") or any(n.startswith("noiommu-") for n in dev_vfio)
    real_listed = None if listed is None else listed - noiommu_groups
    real_linked = max(linked - noiommu_groups, 0)
    enabled = bool(real_listed) or real_linked > 0
    reasons = []
    if enabled:
        reasons.append(f"{max(real_listed or 0, real_linked)} IOMMU groups")
    else:
        reasons.append("no IOMMU groups")
    if iommu_class:
        reasons.append("IOMMU units: " + ", ".join(iommu_class))
    if tables:
        reasons.append("firmware tables: " + ", ".join(tables))
    if noiommu:
        reasons.append("vfio noiommu mode is on")
    return RefStatus(
        enabled=enabled,
        reasons=tuple(reasons),
        group_count=max(listed if listed is not None else linked, linked),
        iommu_class=iommu_class,
        firmware_tables=tables,
        cmdline=cmdline,
        cpu_vendor=vendor,
        vfio_module=_exists(root_fd, "module/vfio"),
        vfio_pci_driver=_exists(root_fd, "bus/pci/drivers/vfio-pci"),
        iommufd_module=_exists(root_fd, "module/iommufd"),
        vfio_container_node=os.path.exists(os.path.join(dev_root, "vfio", "vfio")),
        iommufd_node=os.path.exists(os.path.join(dev_root, "iommu")),
        noiommu=noiommu,
    )


def _iommu_argument(arg: str) -> bool:
    key = arg.split("=", 1)[0]
    return key in _CMDLINE_KEYS or key.split(".", 1)[0] in _CMDLINE_KEYS


def _vendor(tables: tuple[str, ...], iommu_class: tuple[str, ...]) -> str | None:
    by_table = {"DMAR": "intel", "IVRS": "amd", "IORT": "arm"}
    for table in tables:
        return by_table[table]
    for name in iommu_class:
        for prefix, vendor in (("dmar", "intel"), ("ivhd", "amd"), ("smmu", "arm")):
            if name.startswith(prefix):
                return vendor
    return None


# --- the scan ---------------------------------------------------------------------------


def default_proc_root(sysfs_root: str) -> str | None:
    """``/proc`` for the real ``/sys``, else a ``proc`` directory beside the sysfs root."""
    if os.path.normpath(sysfs_root) == "/sys":
        return "/proc"
    beside = os.path.join(os.path.dirname(os.path.normpath(sysfs_root)), "proc")
    return beside if os.path.isdir(beside) else None


def scan(
    sysfs_root: str = "/sys",
    dev_root: str = "/dev",
    proc_root: str | None = None,
    details: bool = False,
) -> RefHost:
    """Scans a host. Raises ``OSError`` only when the sysfs root or its
    ``bus/pci/devices`` cannot be opened; everything else is tolerated."""
    root_fd = os.open(sysfs_root, _DIR_FLAGS)
    try:
        devices_fd = os.open("bus/pci/devices", _DIR_FLAGS, dir_fd=root_fd)
        try:
            return _scan(
                root_fd,
                devices_fd,
                sysfs_root=sysfs_root,
                dev_root=dev_root,
                proc_root=proc_root,
                details=details,
            )
        finally:
            os.close(devices_fd)
    finally:
        os.close(root_fd)


def _scan(
    root_fd: int,
    devices_fd: int,
    *,
    sysfs_root: str,
    dev_root: str,
    proc_root: str | None,
    details: bool,
) -> RefHost:
    entries = [(b, n) for n in os.listdir(devices_fd) if (b := canonical_bdf(n)) is not None]
    listing = _group_listing(root_fd)
    group_of = (
        {bdf: gid for gid, members in listing.items() for bdf in members} if listing else None
    )
    devices = [
        dev
        for bdf, name in entries
        if (dev := _read_device(devices_fd, name, bdf, group_of, details)) is not None
    ]
    devices.sort(key=lambda d: bdf_key(d.bdf))
    linked: dict[int, list[str]] = {}
    for dev in devices:
        if dev.iommu_group is not None:
            linked.setdefault(dev.iommu_group, []).append(dev.bdf)
    members = listing if listing else linked
    by_bdf = {d.bdf: d for d in devices}
    groups = tuple(_judge(gid, members[gid], by_bdf) for gid in sorted(members))
    noiommu_groups = _count_noiommu_groups(root_fd, members)
    status = _status(
        root_fd,
        dev_root=dev_root,
        proc_root=proc_root if proc_root is not None else default_proc_root(sysfs_root),
        listed=None if listing is None else len(listing),
        linked=len(linked),
        noiommu_groups=noiommu_groups,
    )
    return RefHost(sysfs_root, dev_root, tuple(devices), groups, status, details)


def _count_noiommu_groups(root_fd: int, members: dict[int, list[str]]) -> int:
    # Only worth the reads when vfio's noiommu mode is on.
    param = _read(root_fd, "module/vfio/parameters/enable_unsafe_noiommu_mode")
    if param not in ("Y", "1"):
        return 0
    return sum(
        1 for gid in members if _read(root_fd, f"kernel/iommu_groups/{gid}/name") == "vfio-noiommu"
    )


__all__ = [
    "RefBar",
    "RefBlocker",
    "RefDevice",
    "RefGroup",
    "RefHost",
    "RefLink",
    "RefStatus",
    "bdf_key",
    "canonical_bdf",
    "scan",
]
