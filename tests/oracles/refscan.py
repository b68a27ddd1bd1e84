"""An independent pure-Python scanner with the semantics of :func:`kata_vfio.scan`.

It is the differential oracle for the Rust core and the "best Python" contender in the
benchmarks, so it is written the way Python reads sysfs fastest: every path is opened
relative to a directory fd (``os.open(..., dir_fd=)``, ``os.readlink(..., dir_fd=)``), the
IDs, class and driver come from one ``uevent`` read, the PCIe rule is an ``lstat`` of
``config`` (never read), IOMMU groups come from the ``kernel/iommu_groups`` listing when it
exists and from each device's ``iommu_group`` link otherwise. It shares no code with the Rust
core; where the two disagree one of them has a bug.

Semantics (the kernel's, as :mod:`kata_vfio._core` documents them):

- every path stays inside the roots given: a link that leaves the sysfs root (absolute, or
  ``..`` past it) is refused; attributes are opened without following a link, without
  blocking, and read only when they are regular files;
- a device is listed when its ``bus/pci/devices`` entry parses as an address and its vendor,
  device and class can be read (``uevent`` when it is whole, else ``modalias``, else the
  single files); one that vanishes mid-scan is left out, one that cannot be read is listed in
  ``unreadable`` with why; an optional attribute that is absent is ``None``, one that exists
  but cannot be read is ``None`` and a ``problem`` (attribute, reason);
- group members come from ``kernel/iommu_groups/N/devices`` when that listing exists (plus
  any device whose link names the group); a member without a readable record, a driver that
  cannot be read, or a listing that cannot be read make the group ``unknown``;
- fixes are data: bind the group, bind the device, unbind the bridge, or none (a platform
  function would be taken, or a member cannot be read);
- ``upstream`` are the addresses among the components of the bus link's target, root first;
  ``physfn`` is read from the VF's own ``physfn`` link, ``virtfns`` from ``virtfnN`` links;
- a group is *viable* when no member is an endpoint on a host driver or a bridge on a driver
  other than pcieport/vfio/pci-stub; it is *assignable* when it is viable, has endpoints and
  every endpoint is on a vfio driver;
- vfio's noiommu groups (``name`` reads ``vfio-noiommu``) are not evidence of an IOMMU, and
  a cdev in noiommu mode is named ``noiommu-vfioN`` (drivers/vfio/vfio_main.c).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_BDF_RE = re.compile(r"^([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$")
_SHORT_BDF_RE = re.compile(r"^([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$")
_CDEV_RE = re.compile(r"^(?:noiommu-)?vfio(0|[1-9][0-9]*)$")
_DEC_RE = re.compile(r"^(0|[1-9][0-9]*)$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW
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


# Platform functions by class and subclass (the 16 top bits of the class code).
_PLATFORM_CLASSES = {
    0x0600: "host-bridge", 0x0601: "isa-bridge", 0x0602: "legacy-bus-bridge",
    0x0603: "legacy-bus-bridge", 0x0C05: "smbus", 0x0806: "iommu",
    0x0800: "interrupt-controller", 0x0801: "dma-controller", 0x0802: "timer", 0x0803: "rtc",
    0x0807: "event-collector", 0x0500: "memory-controller", 0x0501: "memory-controller",
    0x0580: "memory-controller",
}  # fmt: skip


def platform_function(
    class_code: int, boot_vga: bool, *, on_root_bus: bool = False, driver: str | None = None
) -> str | None:
    """The platform role of a function, if any (see ``PciDevice.platform_function``)."""
    found = _PLATFORM_CLASSES.get(class_code >> 8)
    if found is None and boot_vga:
        return "boot-vga"
    if found is None and class_code >> 8 == 0x0880 and on_root_bus and driver is None:
        return "root-complex-peripheral"
    return found


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
class RefProblem:
    """A fact of one function that exists but could not be read."""

    bdf: str
    attribute: str
    reason: str


@dataclass(frozen=True)
class RefFix:
    """A structured fix: ``action`` and its target, or why there is none."""

    action: str
    group: int | None = None
    bdf: str | None = None
    because: str | None = None
    platform_function: str | None = None


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
    boot_vga: bool = False
    problems: tuple[RefProblem, ...] = ()
    has_details: bool = False
    bars: tuple[RefBar, ...] | None = None
    reset_methods: tuple[str, ...] | None = None
    link: RefLink | None = None

    @property
    def platform_function(self) -> str | None:
        """The platform role of this function, if any."""
        return platform_function(
            self.class_code, self.boot_vga, on_root_bus=not self.upstream, driver=self.driver
        )

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
    kind: str
    breaks_viability: bool
    fix: RefFix = field(default_factory=lambda: RefFix("none"))
    problem: RefProblem | None = None


@dataclass(frozen=True)
class RefGroup:
    """An IOMMU group and its verdict."""

    id: int
    devices: tuple[str, ...]
    endpoints: tuple[str, ...]
    viable: bool
    assignable: bool
    blockers: tuple[RefBlocker, ...]
    verdict: str = "assignable"
    listing_problem: str | None = None
    unplaced: tuple[str, ...] = ()


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
    unreadable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RefHost:
    """A scanned host."""

    sysfs_root: str
    dev_root: str
    devices: tuple[RefDevice, ...]
    groups: tuple[RefGroup, ...]
    iommu: RefStatus
    has_details: bool
    unreadable: tuple[RefProblem, ...] = ()

    def find_device(self, bdf: str) -> RefDevice | None:
        """The device at ``bdf`` (any accepted spelling), or None."""
        want = canonical_bdf(bdf)
        return next((d for d in self.devices if d.bdf == want), None)

    def find_group(self, group_id: int) -> RefGroup | None:
        """The group ``group_id``, or None."""
        return next((g for g in self.groups if g.id == group_id), None)


# --- low-level reads --------------------------------------------------------------------

_ABSENT = frozenset({errno.ENOENT, errno.ENODEV, errno.ENOTDIR, errno.ENXIO})


class _Failed(Exception):
    """An attribute that exists but could not be read, with the reason's name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: OSError) -> str | None:
    """The problem an OS error is, or None when it means "absent"."""
    if exc.errno in _ABSENT:
        return None
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission-denied"
    if exc.errno == errno.EXDEV:
        return "escapes-root"
    if exc.errno in (errno.ELOOP, errno.EISDIR):
        return "not-a-regular-file"
    return "os-error"


def _read(dir_fd: int, name: str, *, raw: bool = False) -> str | None:
    """One attribute as text (stripped unless ``raw``): opened without following a link and
    without blocking, read only when it is a regular file. None when absent; raises
    :class:`_Failed` when it exists but cannot be read."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        reason = _reason(exc)
        if reason is None:
            return None
        raise _Failed(reason) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Failed("not-a-regular-file")
        data = os.read(fd, _ATTR_MAX)
    except OSError as exc:
        raise _Failed(_reason(exc) or "missing") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed("invalid") from None
    return text if raw else text.strip()


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


def _resolve(base: str, target: str) -> str | None:
    """A relative link target resolved lexically against the link's directory; None when it
    is absolute or climbs above the root."""
    if target.startswith("/"):
        return None
    parts = [p for p in base.split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


class _Root:
    """A root directory (sysfs, dev, proc) that every path is checked to stay inside: the
    path is opened, then the kernel is asked where the descriptor really is
    (``/proc/self/fd``); a descriptor outside the root is closed unused (``EXDEV``)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, _DIR_FLAGS)
        self.real = os.readlink(f"/proc/self/fd/{self.fd}")

    def close(self) -> None:
        os.close(self.fd)

    def open(self, rel: str, flags: int) -> int:
        if rel.startswith("/") or _resolve("", rel) is None:
            raise OSError(errno.EXDEV, "leaves the root", rel)
        fd = os.open(rel or ".", flags, dir_fd=self.fd)
        where = os.readlink(f"/proc/self/fd/{fd}")
        if where != self.real and not where.startswith(self.real.rstrip("/") + "/"):
            os.close(fd)
            raise OSError(errno.EXDEV, "leaves the root", rel)
        return fd

    def _parent(self, rel: str) -> tuple[int, str]:
        parent, _, name = rel.rpartition("/")
        return self.open(parent, _PATH_FLAGS), name

    def read(self, rel: str) -> str | None:
        """An attribute (absent or unreadable: None)."""
        try:
            dfd, name = self._parent(rel)
        except OSError:
            return None
        try:
            return _read(dfd, name)
        except _Failed:
            return None
        finally:
            os.close(dfd)

    def listdir(self, rel: str) -> list[str] | None:
        """A directory's names, or None."""
        return self.listdir_or_reason(rel)[0]

    def listdir_or_reason(self, rel: str) -> tuple[list[str] | None, str | None]:
        """A directory's names, or None and the problem (None when absent)."""
        try:
            fd = self.open(rel, _DIR_FLAGS)
        except OSError as exc:
            return None, _reason(exc)
        try:
            return os.listdir(fd), None
        except OSError as exc:
            return None, _reason(exc)
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        """The last component exists (a link counts)."""
        try:
            dfd, name = self._parent(rel)
        except OSError:
            return False
        try:
            os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return False
        finally:
            os.close(dfd)
        return True

    def resolves(self, rel: str) -> tuple[bool, str | None]:
        """Whether the path resolves inside the root, and the problem when it exists but
        cannot be reached."""
        try:
            os.close(self.open(rel, os.O_PATH | os.O_CLOEXEC))
        except OSError as exc:
            return False, _reason(exc)
        return True, None


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


def _parse_uevent(text: str) -> _Ids | None:
    """The fields of a whole ``uevent``; None when it is empty or cut short (it must end in a
    newline, carry IDs and class, and a ``MODALIAS`` line that parses)."""
    ids = _Ids()
    whole = False
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
        elif key == "MODALIAS":
            whole = _MODALIAS_RE.match(value) is not None
    return ids if whole and ids.complete() and text.endswith("\n") else None


_MODALIAS_RE = re.compile(
    r"^pci:v([0-9A-Fa-f]{8})d([0-9A-Fa-f]{8})sv([0-9A-Fa-f]{8})sd([0-9A-Fa-f]{8})"
    r"bc([0-9A-Fa-f]{2})sc([0-9A-Fa-f]{2})i([0-9A-Fa-f]{2})"
)


def _u16(text: str) -> int | None:
    value = int(text, 16)
    return value if value <= 0xFFFF else None


class _DeviceReader:
    """One device directory being read, with the problems met on the way."""

    def __init__(self, dfd: int, bdf: str) -> None:
        self.dfd = dfd
        self.bdf = bdf
        self.problems: list[RefProblem] = []

    def note(self, attribute: str, reason: str) -> None:
        self.problems.append(RefProblem(self.bdf, attribute, reason))

    def text(self, name: str, *, raw: bool = False) -> str | None:
        try:
            return _read(self.dfd, name, raw=raw)
        except _Failed as failed:
            self.note(name, failed.reason)
            return None

    def parsed(self, name: str, parse: Callable[[str], tuple[bool, object]]) -> object:
        """``parse`` gives (valid, value); an invalid text is a problem."""
        text = self.text(name)
        if text is None:
            return None
        ok, value = parse(text)
        if not ok:
            self.note(name, "invalid")
            return None
        return value

    def link_name(self, name: str) -> str | None:
        try:
            target = os.readlink(name, dir_fd=self.dfd)
        except OSError as exc:
            reason = _reason(exc)
            if reason is not None:
                self.note(name, reason)
            return None
        return posixpath.basename(target)


def _hex_parser(limit: int) -> Callable[[str], tuple[bool, object]]:
    def parse(text: str) -> tuple[bool, object]:
        value = _hex(text, 0xFFFFFFFF)
        return (False, None) if value is None or value > limit else (True, value)

    return parse


def _read_ids(reader: _DeviceReader) -> tuple[_Ids, bool] | None:
    text = reader.text("uevent", raw=True)
    ids = None
    if text is not None:
        ids = _parse_uevent(text)
        if ids is None:
            reader.note("uevent", "invalid")
    trusted = ids is not None
    ids = ids or _Ids()
    if not ids.complete():
        alias = reader.parsed(
            "modalias",
            lambda t: (m is not None, m) if (m := _MODALIAS_RE.match(t)) else (False, None),
        )
        if isinstance(alias, re.Match):
            v, d, sv, sd, bc, sc, pi = alias.groups()
            ids.vendor = ids.vendor if ids.vendor is not None else _u16(v)
            ids.device = ids.device if ids.device is not None else _u16(d)
            ids.subsystem_vendor = (
                ids.subsystem_vendor if ids.subsystem_vendor is not None else _u16(sv)
            )
            ids.subsystem_device = (
                ids.subsystem_device if ids.subsystem_device is not None else _u16(sd)
            )
            if ids.class_code is None:
                ids.class_code = int(bc, 16) << 16 | int(sc, 16) << 8 | int(pi, 16)
    if not ids.complete():
        if ids.vendor is None:
            ids.vendor = reader.parsed("vendor", _hex_parser(0xFFFF))  # type: ignore[assignment]
        if ids.device is None:
            ids.device = reader.parsed("device", _hex_parser(0xFFFF))  # type: ignore[assignment]
        if ids.class_code is None:
            ids.class_code = reader.parsed("class", _hex_parser(0xFFFFFF))  # type: ignore[assignment]
    if not ids.complete():
        return None
    if ids.subsystem_vendor is None:
        ids.subsystem_vendor = reader.parsed("subsystem_vendor", _hex_parser(0xFFFF))  # type: ignore[assignment]
    if ids.subsystem_device is None:
        ids.subsystem_device = reader.parsed("subsystem_device", _hex_parser(0xFFFF))  # type: ignore[assignment]
    return ids, trusted


def _read_cdev(dfd: int) -> str | None:
    names = _listdir(dfd, "vfio-dev")
    if not names:
        return None
    cdevs = [(int(m.group(1)), n) for n in names if (m := _CDEV_RE.match(n)) is not None]
    return min(cdevs)[1] if cdevs else None


def _parse_count(text: str) -> tuple[bool, object]:
    value = _dec(text)
    return (value is not None and value <= 0xFFFFFFFF, value)


def _read_sriov(reader: _DeviceReader) -> tuple[int | None, int | None, tuple[str, ...]]:
    """``sriov_totalvfs``, ``sriov_numvfs`` and the VFs. Only PFs have ``sriov_totalvfs``
    (readable or not); when the count cannot be read the ``virtfnN`` links are followed up to
    the first missing one."""
    try:
        text = _read(reader.dfd, "sriov_totalvfs")
    except _Failed as failed:
        reader.note("sriov_totalvfs", failed.reason)
        text = None
        is_pf = True
    else:
        is_pf = text is not None or _exists_not_enoent(reader.dfd, "sriov_totalvfs")
    if not is_pf:
        return None, None, ()
    totalvfs = None
    if text is not None:
        ok, value = _parse_count(text)
        if ok and isinstance(value, int):
            totalvfs = value
        else:
            reader.note("sriov_totalvfs", "invalid")
    numvfs = reader.parsed("sriov_numvfs", _parse_count)
    assert numvfs is None or isinstance(numvfs, int)
    found: set[str] = set()
    index = 0
    while numvfs is None or index < numvfs:
        target = _readlink(reader.dfd, f"virtfn{index}")
        if target is None and numvfs is None:
            break
        bdf = canonical_bdf(posixpath.basename(target)) if target else None
        if bdf is not None:
            found.add(bdf)
        index += 1
    return totalvfs, numvfs, tuple(sorted(found, key=bdf_key))


def _exists_not_enoent(dfd: int, name: str) -> bool:
    """A PF is told by ``sriov_totalvfs`` existing: only ENOENT rules it out."""
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError as exc:
        return exc.errno != errno.ENOENT
    return True


def _parse_resource(text: str) -> tuple[RefBar, ...] | None:
    """BARs 0-5; None unless the first six lines are three ``0x`` numbers each with sane
    ends (an unknown BAR set is not an empty one)."""
    lines = text.splitlines()[:6]
    if len(lines) < 6:
        return None
    bars: list[RefBar] = []
    for index, line in enumerate(lines):
        fields = line.split()
        if len(fields) != 3 or not all(f.startswith("0x") and 2 < len(f) <= 18 for f in fields):
            return None
        try:
            start, end, flags = (int(f, 16) for f in fields)
        except ValueError:
            return None
        if end == 0 or not flags & (_IORESOURCE_IO | _IORESOURCE_MEM):
            continue
        size = end - start + 1
        if end < start or size >= 1 << 64:
            return None
        bars.append(
            RefBar(
                index=index,
                start=start,
                size=size,
                is_io=bool(flags & _IORESOURCE_IO),
                is_64bit=bool(flags & _IORESOURCE_MEM_64),
                prefetchable=bool(flags & _IORESOURCE_PREFETCH),
            )
        )
    return tuple(bars)


def _read_details(
    reader: _DeviceReader,
) -> tuple[tuple[RefBar, ...] | None, tuple[str, ...] | None, RefLink | None]:
    try:
        resource = _read(reader.dfd, "resource", raw=True)  # line N is BAR N
    except _Failed as failed:
        reader.note("resource", failed.reason)
        bars = None
    else:
        if resource is None:
            reader.note("resource", "missing")
            bars = None
        else:
            bars = _parse_resource(resource)
            if bars is None:
                reader.note("resource", "invalid")
    reset = reader.text("reset_method")
    link = RefLink(
        current_speed=_speed(reader.text("current_link_speed")),
        current_width=_width(reader.text("current_link_width")),
        max_speed=_speed(reader.text("max_link_speed")),
        max_width=_width(reader.text("max_link_width")),
    )
    empty = RefLink(None, None, None, None)
    return bars, None if reset is None else tuple(reset.split()), None if link == empty else link


def _speed(text: str | None) -> str | None:
    return None if not text or text.startswith("Unknown") else text


def _width(text: str | None) -> int | None:
    value = _dec(text)
    return value if value else None


def _parse_numa(text: str) -> tuple[bool, object]:
    if re.fullmatch(r"[+-]?[0-9]+", text) is None:
        return False, None
    value = int(text)
    if not -(1 << 63) <= value < 1 << 63:
        return False, None
    return True, value if 0 <= value <= 0xFFFFFFFF else None


def _parse_revision(text: str) -> tuple[bool, object]:
    value = _hex(text, 0xFFFFFFFF)
    return (False, None) if value is None or value > 0xFF else (True, value)


def _boot_vga(reader: _DeviceReader) -> bool:
    """``1``: yes; absent or ``0``: no; anything else, or unreadable: yes (a problem)."""
    try:
        text = _read(reader.dfd, "boot_vga")
    except _Failed as failed:
        reader.note("boot_vga", failed.reason)
        return True
    if text is None or text == "0":
        return False
    if text != "1":
        reader.note("boot_vga", "invalid")
    return True


_Unreadable = RefProblem


def _read_device(
    root: _Root, devices_fd: int, name: str, bdf: str, *, groups: dict[str, int] | None,
    details: bool,
) -> RefDevice | _Unreadable | None:  # fmt: skip
    try:
        target: str | None = os.readlink(name, dir_fd=devices_fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            target = None  # not a link: the directory itself
        else:
            reason = _reason(exc)
            return None if reason is None else RefProblem(bdf, "device", reason)
    sysfs_path = (
        f"bus/pci/devices/{name}" if target is None else _resolve("bus/pci/devices", target)
    )
    if sysfs_path is None:
        return RefProblem(bdf, "device", "escapes-root")
    try:
        dfd = root.open(sysfs_path, _PATH_FLAGS)
    except OSError as exc:
        reason = _reason(exc)
        return None if reason is None else RefProblem(bdf, "device", reason)
    try:
        return _read_device_at(_DeviceReader(dfd, bdf), sysfs_path, groups, details)
    finally:
        os.close(dfd)


def _read_device_at(
    reader: _DeviceReader, sysfs_path: str, groups: dict[str, int] | None, details: bool
) -> RefDevice | _Unreadable:
    bdf = reader.bdf
    found = _read_ids(reader)
    if found is None:
        return reader.problems[0] if reader.problems else RefProblem(bdf, "class", "missing")
    ids, trusted = found
    driver = ids.driver if trusted else reader.link_name("driver")
    revision = reader.parsed("revision", _parse_revision)
    numa_node = reader.parsed("numa_node", _parse_numa)
    override = reader.text("driver_override")
    group = groups.get(bdf) if groups is not None else None
    if group is None:
        group_link = reader.link_name("iommu_group")
        if group_link is not None:
            group = _dec(group_link)
            if group is None or group > 0xFFFFFFFF:
                reader.note("iommu_group", "invalid")
                group = None
    try:
        is_pcie = os.stat("config", dir_fd=reader.dfd, follow_symlinks=False).st_size > (
            _CONVENTIONAL_CONFIG
        )
    except OSError as exc:
        reason = _reason(exc)
        if reason is not None:
            reader.note("config", reason)
        is_pcie = False
    cdev = _read_cdev(reader.dfd) if is_vfio_driver(driver) else None
    totalvfs, numvfs, virtfns = _read_sriov(reader)
    assert ids.class_code is not None
    boot_vga = ids.class_code >> 8 == 0x0300 and _boot_vga(reader)
    bars, reset, link = _read_details(reader) if details else (None, None, None)
    physfn_link = _readlink(reader.dfd, "physfn")
    upstream = tuple(b for b in map(canonical_bdf, sysfs_path.split("/")) if b is not None)
    if upstream and upstream[-1] == bdf:
        upstream = upstream[:-1]
    assert ids.vendor is not None
    assert ids.device is not None
    assert revision is None or isinstance(revision, int)
    assert numa_node is None or isinstance(numa_node, int)
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
        vfio_cdev=cdev,
        sysfs_path=sysfs_path,
        boot_vga=boot_vga,
        problems=tuple(reader.problems),
        has_details=details,
        bars=bars,
        reset_methods=reset,
        link=link,
    )


# --- groups -----------------------------------------------------------------------------


@dataclass
class _Listing:
    members: dict[int, list[str]]
    failures: dict[int, str]
    unreadable: str | None = None


def _group_listing(root: _Root) -> _Listing | None:
    names, reason = root.listdir_or_reason("kernel/iommu_groups")
    if names is None:
        return None if reason is None else _Listing({}, {}, reason)
    listing = _Listing({}, {})
    for name in names:
        if not _DEC_RE.match(name):
            continue
        number = int(name)
        members, reason = root.listdir_or_reason(f"kernel/iommu_groups/{name}/devices")
        if members is None:
            listing.failures[number] = reason or "missing"
            listing.members[number] = []
            continue
        listing.members[number] = [b for b in map(canonical_bdf, members) if b is not None]
    return listing


def _block_kind(dev: RefDevice) -> tuple[str, RefProblem | None] | None:
    driver_problem = next((p for p in dev.problems if p.attribute == "driver"), None)
    if driver_problem is not None:
        return "unknown", driver_problem
    driver = dev.driver
    if is_vfio_driver(driver):
        return None
    if not dev.is_endpoint:
        if driver is None or _is_dma_safe(driver):
            return None
        return "bridge-driver", None
    if driver is None:
        return "unbound", None
    if driver == "pci-stub":
        return "stub", None
    return "host-driver", None


def _judge(
    group_id: int,
    members: Iterable[str],
    by_bdf: dict[str, RefDevice],
    unreadable: dict[str, RefProblem],
    listing_problem: str | None,
    unplaced: tuple[str, ...] = (),
) -> RefGroup:
    devices = tuple(sorted(set(members), key=bdf_key))
    known = [by_bdf[b] for b in devices if b in by_bdf]
    endpoints = tuple(d.bdf for d in known if d.is_endpoint)
    found: list[tuple[str, RefDevice | None, str, RefProblem | None]] = []
    for bdf in devices:
        dev = by_bdf.get(bdf)
        if dev is None:
            unread = unreadable.get(bdf, RefProblem(bdf, "device", "missing"))
            found.append((bdf, None, "unknown", unread))
            continue
        block = _block_kind(dev)
        if block is not None:
            found.append((bdf, dev, *block))
    unknown_member = next((b for b, _, k, _ in found if k == "unknown"), None)
    if unknown_member is None and unplaced:
        unknown_member = unplaced[0]
    moved = next(
        (
            (d.bdf, d.platform_function)
            for d in known
            if d.is_endpoint and not d.is_vfio_bound and d.platform_function is not None
        ),
        None,
    )
    several = len(endpoints) > 1
    blockers = []
    for bdf, dev, kind, problem in found:
        own = None if dev is None or dev.platform_function is None else (bdf, dev.platform_function)
        fix = _fix(
            group_id,
            bdf,
            kind,
            unknown_member=unknown_member,
            moved=moved if several else own,
            own=own,
            several=several,
        )
        blockers.append(
            RefBlocker(
                bdf=bdf,
                driver=None if dev is None else dev.driver,
                kind=kind,
                breaks_viability=kind in ("host-driver", "bridge-driver", "unknown"),
                fix=fix,
                problem=problem,
            )
        )
    unknown = listing_problem is not None or unknown_member is not None
    viable = not unknown and not any(b.breaks_viability for b in blockers)
    assignable = viable and bool(endpoints) and not blockers
    if unknown:
        verdict = "unknown"
    elif not endpoints:
        verdict = "no-endpoints"
    elif assignable:
        verdict = "assignable"
    else:
        verdict = "not-ready" if viable else "not-viable"
    return RefGroup(
        id=group_id,
        devices=devices,
        endpoints=endpoints,
        viable=viable,
        assignable=assignable,
        blockers=tuple(blockers),
        verdict=verdict,
        listing_problem=listing_problem,
        unplaced=tuple(b for b in unplaced if b not in devices),
    )


def _fix(
    group_id: int,
    bdf: str,
    kind: str,
    *,
    unknown_member: str | None,
    moved: tuple[str, str] | None,
    own: tuple[str, str] | None,
    several: bool,
) -> RefFix:
    if unknown_member is not None:
        return RefFix("none", bdf=unknown_member, because="unknown-member")
    if kind == "bridge-driver":
        if own is not None:
            return RefFix("none", bdf=own[0], because="platform-function", platform_function=own[1])
        return RefFix("unbind-bridge", bdf=bdf)
    if moved is not None:
        return RefFix("none", bdf=moved[0], because="platform-function", platform_function=moved[1])
    if several:
        return RefFix("bind-group", group=group_id)
    return RefFix("bind-device", bdf=bdf)


# --- host status ------------------------------------------------------------------------


def _status(
    root: _Root,
    *,
    dev_root: str,
    proc_root: str | None,
    listed: int | None,
    linked: int,
    noiommu_groups: int,
) -> RefStatus:
    unreadable: list[tuple[str, str]] = []
    names, reason = root.listdir_or_reason("class/iommu")
    if reason is not None:
        unreadable.append(("sys/class/iommu", reason))
    iommu_class = tuple(sorted(names or ()))
    tables = tuple(t for t in ("DMAR", "IVRS", "IORT") if root.exists(f"firmware/acpi/tables/{t}"))
    cmdline = None
    cpuinfo = None
    if proc_root is not None:
        try:
            proc = _Root(proc_root)
        except OSError as exc:
            reason = _reason(exc)
            if reason is not None:
                unreadable.append(("proc", reason))
        else:
            try:
                text = _read(proc.fd, "cmdline")
                cmdline = (
                    None if text is None else tuple(a for a in text.split() if _iommu_argument(a))
                )
            except _Failed as failed:
                unreadable.append(("proc/cmdline", failed.reason))
            try:
                cpuinfo = _read(proc.fd, "cpuinfo")
            except _Failed:
                cpuinfo = None
            proc.close()
    vendor = _vendor(tables, iommu_class) or _cpu_vendor(cpuinfo)
    param = root.read("module/vfio/parameters/enable_unsafe_noiommu_mode")
    container = iommufd = False
    dev_vfio: list[str] = []
    try:
        dev = _Root(dev_root)
    except OSError:
        dev = None
    if dev is not None:
        container, reason = dev.resolves("vfio/vfio")
        if reason is not None:
            unreadable.append(("dev/vfio/vfio", reason))
        iommufd, reason = dev.resolves("iommu")
        if reason is not None:
            unreadable.append(("dev/iommu", reason))
        dev_vfio = dev.listdir("vfio") or []
        dev.close()
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
        vfio_module=root.exists("module/vfio"),
        vfio_pci_driver=root.exists("bus/pci/drivers/vfio-pci"),
        iommufd_module=root.exists("module/iommufd"),
        vfio_container_node=container,
        iommufd_node=iommufd,
        noiommu=noiommu,
        unreadable=tuple(unreadable),
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


def _cpu_vendor(cpuinfo: str | None) -> str | None:
    for line in (cpuinfo or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and value == "GenuineIntel":
            return "intel"
        if key == "vendor_id" and value in ("AuthenticAMD", "HygonGenuine"):
            return "amd"
        if key == "CPU implementer":
            return "arm"
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
    ``bus/pci/devices`` cannot be opened; everything else is recorded and judged."""
    root = _Root(sysfs_root)
    try:
        devices_fd = root.open("bus/pci/devices", _DIR_FLAGS)
        try:
            return _scan(
                root,
                devices_fd,
                sysfs_root=sysfs_root,
                dev_root=dev_root,
                proc_root=proc_root,
                details=details,
            )
        finally:
            os.close(devices_fd)
    finally:
        root.close()


def _scan(
    root: _Root,
    devices_fd: int,
    *,
    sysfs_root: str,
    dev_root: str,
    proc_root: str | None,
    details: bool,
) -> RefHost:
    entries = [(b, n) for n in os.listdir(devices_fd) if (b := canonical_bdf(n)) is not None]
    listing = _group_listing(root)
    usable = listing is not None and listing.unreadable is None
    group_of = (
        {bdf: gid for gid, members in listing.members.items() for bdf in members}
        if listing is not None and usable
        else None
    )
    devices: list[RefDevice] = []
    unreadable: list[RefProblem] = []
    for bdf, name in entries:
        got = _read_device(root, devices_fd, name, bdf, groups=group_of, details=details)
        if isinstance(got, RefDevice):
            devices.append(got)
        elif got is not None:
            unreadable.append(got)
    devices.sort(key=lambda d: bdf_key(d.bdf))
    unreadable.sort(key=lambda p: bdf_key(p.bdf))
    linked: dict[int, list[str]] = {}
    for dev in devices:
        if dev.iommu_group is not None:
            linked.setdefault(dev.iommu_group, []).append(dev.bdf)
    failures: dict[int, str] = {}
    if listing is None:
        members = linked
    elif listing.unreadable is not None:
        members = linked
        failures = dict.fromkeys(linked, listing.unreadable)
    else:
        members = {gid: list(bdfs) for gid, bdfs in listing.members.items()}
        for gid, bdfs in linked.items():
            members.setdefault(gid, []).extend(bdfs)
        failures = listing.failures
    by_bdf = {d.bdf: d for d in devices}
    by_problem = {p.bdf: p for p in unreadable}
    # Without the kernel's listing, a function whose group link cannot be read may be in any.
    unplaced: tuple[str, ...] = ()
    if listing is None:
        unplaced = tuple(p.bdf for p in unreadable) + tuple(
            d.bdf for d in devices if any(p.attribute == "iommu_group" for p in d.problems)
        )
    groups = tuple(
        _judge(gid, members[gid], by_bdf, by_problem, failures.get(gid), unplaced)
        for gid in sorted(members)
    )
    noiommu_groups = _count_noiommu_groups(root)
    status = _status(
        root,
        dev_root=dev_root,
        proc_root=proc_root if proc_root is not None else default_proc_root(sysfs_root),
        listed=len(listing.members) if listing is not None and usable else None,
        linked=len(linked),
        noiommu_groups=noiommu_groups,
    )
    return RefHost(sysfs_root, dev_root, tuple(devices), groups, status, details, tuple(unreadable))


def _count_noiommu_groups(root: _Root) -> int:
    # Only worth the reads when vfio's noiommu mode is on.
    param = root.read("module/vfio/parameters/enable_unsafe_noiommu_mode")
    if param not in ("Y", "1"):
        return 0
    return sum(
        1
        for name in root.listdir("kernel/iommu_groups") or ()
        if name.isdigit() and root.read(f"kernel/iommu_groups/{name}/name") == "vfio-noiommu"
    )


__all__ = [
    "RefBar",
    "RefBlocker",
    "RefDevice",
    "RefFix",
    "RefGroup",
    "RefHost",
    "RefLink",
    "RefProblem",
    "RefStatus",
    "bdf_key",
    "canonical_bdf",
    "platform_function",
    "scan",
]
