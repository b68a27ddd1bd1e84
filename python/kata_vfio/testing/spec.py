"""The description of a fake host: frozen records, validation, and a compact dict form.

A :class:`HostSpec` lists PCI functions (:class:`DeviceSpec`) and host-wide knobs (IOMMU on or
off and its vendor, vfio cdev support, noiommu mode, kernel command line). Topology is given by
``parent``: the BDF of the bridge a function sits behind (root port, switch downstream port);
functions without a parent sit on a root bus. SR-IOV VFs name their PF in ``physfn`` and live
beside it, as in the kernel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kata_vfio.errors import InvalidInputError
from kata_vfio.testing._classes import ClassRoles

IommuVendor = Literal["intel", "amd", "arm"]

_BDF_RE = re.compile(r"^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
_DRIVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Attribute names a spec may leave out or make unreadable: plain names, no paths.
_ATTR_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESET_METHODS = frozenset({"flr", "pm", "bus", "device_specific", "acpi", "af", "cxl_bus"})


def parse_bdf(text: str) -> tuple[int, int, int, int]:
    """Splits a canonical ``dddd:bb:dd.f`` address (lower case, 4-8 digit domain)."""
    match = _BDF_RE.match(text)
    if match is None or int(match.group(3), 16) > 0x1F:
        raise InvalidInputError(
            f"fake host: {text!r} is not a canonical PCI address",
            hint="write it as dddd:bb:dd.f in lower case, e.g. 0000:3b:00.0",
        )
    dom, bus, dev, fn = (int(g, 16) for g in match.groups())
    return dom, bus, dev, fn


def format_bdf(domain: int, bus: int, device: int, function: int) -> str:
    """The kernel's spelling of an address (domain at least 4 hex digits)."""
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function:x}"


def bdf_key(text: str) -> tuple[int, int, int, int]:
    """Numeric sort key of a canonical address."""
    return parse_bdf(text)


def is_vfio_driver(driver: str | None) -> bool:
    """vfio-pci or a vfio variant driver (``mlx5_vfio_pci``, ``nvgrace-gpu-vfio-pci``)."""
    if driver is None:
        return False
    return driver == "vfio-pci" or driver.endswith(("_vfio_pci", "-vfio-pci"))


@dataclass(frozen=True)
class BarSpec:
    """One BAR: its index (0-5), size in bytes (a power of two) and kind.

    ``start`` is chosen by the builder when left out.
    """

    index: int
    size: int
    is_64bit: bool = False
    prefetchable: bool = False
    is_io: bool = False
    start: int | None = None

    def validate(self, owner: str) -> None:
        """Raises InvalidInputError when the BAR could not exist."""
        where = f"fake host: device {owner} BAR {self.index}"
        if not 0 <= self.index <= 5 or (self.is_64bit and self.index == 5):
            raise InvalidInputError(f"{where}: index must be 0-5 (0-4 for 64-bit BARs)")
        if self.size <= 0 or self.size & (self.size - 1):
            raise InvalidInputError(f"{where}: size {self.size} is not a power of two")
        if self.is_io and (self.is_64bit or self.prefetchable or self.size > 0x100):
            raise InvalidInputError(f"{where}: an I/O BAR is 32-bit, not prefetchable, <= 256 B")
        if self.start is not None and (self.start < 0 or self.start % self.size):
            raise InvalidInputError(f"{where}: start {self.start:#x} is not aligned to its size")


@dataclass(frozen=True)
class LinkSpec:
    """PCIe link attributes exactly as sysfs prints them (``"32.0 GT/s PCIe"``, 16)."""

    current_speed: str = "16.0 GT/s PCIe"
    current_width: int = 16
    max_speed: str = "16.0 GT/s PCIe"
    max_width: int = 16


@dataclass(frozen=True)
class DeviceSpec(ClassRoles):
    """One PCI function of a fake host.

    ``missing`` names attribute files to leave out (``"revision"``, ``"numa_node"``, ...);
    ``unreadable`` names attribute files that exist but cannot be read (see
    :mod:`kata_vfio.testing` for how that is emulated when the tests run as root).
    """

    bdf: str
    vendor: int
    device: int
    class_code: int
    subsystem_vendor: int = 0
    subsystem_device: int = 0
    revision: int = 0
    driver: str | None = None
    driver_override: str | None = None
    iommu_group: int | None = None
    numa_node: int | None = None
    parent: str | None = None
    pcie: bool = True
    physfn: str | None = None
    sriov_totalvfs: int | None = None
    bars: tuple[BarSpec, ...] = ()
    reset_methods: tuple[str, ...] = ()
    link: LinkSpec | None = None
    missing: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    boot_vga: bool = False
    """The firmware's console (the kernel gives ``boot_vga`` to VGA-class functions only)."""

    @property
    def key(self) -> tuple[int, int, int, int]:
        """Numeric PCI order."""
        return parse_bdf(self.bdf)

    def validate(self) -> None:
        """Checks this function alone; :meth:`HostSpec.validate` checks the relations."""
        parse_bdf(self.bdf)
        where = f"fake host: device {self.bdf}"
        for name, value, bits in (
            ("vendor", self.vendor, 16),
            ("device", self.device, 16),
            ("subsystem_vendor", self.subsystem_vendor, 16),
            ("subsystem_device", self.subsystem_device, 16),
            ("class_code", self.class_code, 24),
            ("revision", self.revision, 8),
        ):
            if not 0 <= value < 1 << bits:
                raise InvalidInputError(f"{where}: {name} {value:#x} does not fit {bits} bits")
        for name, driver in (("driver", self.driver), ("driver_override", self.driver_override)):
            if driver is not None and not _DRIVER_RE.match(driver):
                raise InvalidInputError(
                    f"{where}: {name} {driver!r} is not a driver name",
                    hint="letters, digits, '_', '-' and '.', at most 64 characters",
                )
        if self.iommu_group is not None and self.iommu_group < 0:
            raise InvalidInputError(f"{where}: iommu_group must be >= 0")
        if self.numa_node is not None and not 0 <= self.numa_node < 1024:
            raise InvalidInputError(f"{where}: numa_node must be 0-1023 or None")
        if self.sriov_totalvfs is not None and not 0 < self.sriov_totalvfs <= 0xFFFF:
            raise InvalidInputError(f"{where}: sriov_totalvfs must be 1-65535")
        for bar in self.bars:
            bar.validate(self.bdf)
        if len({bar.index for bar in self.bars}) != len(self.bars):
            raise InvalidInputError(f"{where}: two BARs share an index")
        unknown = set(self.reset_methods) - _RESET_METHODS
        if unknown:
            raise InvalidInputError(
                f"{where}: unknown reset methods {sorted(unknown)}",
                hint=f"use some of {sorted(_RESET_METHODS)}",
            )
        for name in (*self.missing, *self.unreadable):
            if not _ATTR_RE.match(name):
                raise InvalidInputError(f"{where}: {name!r} is not an attribute name")


@dataclass(frozen=True)
class HostSpec:
    """A whole fake host.

    - ``iommu``: False gives no groups, no ``iommu_group`` links and an empty
      ``kernel/iommu_groups`` directory (devices must then have no ``iommu_group``).
    - ``iommu_vendor``: which firmware table (DMAR, IVRS, IORT) and ``class/iommu`` entry.
    - ``cdev``: vfio cdev support (``vfio-dev/vfioN``, ``/dev/vfio/devices/vfioN``).
    - ``noiommu``: vfio's unsafe no-IOMMU mode; only meaningful with ``iommu=False``. Each
      function on a vfio driver then gets its own fake group and a ``noiommu-N`` node.
    - ``vfio_loaded``: the vfio, vfio_pci, vfio_iommu_type1 and iommufd modules are loaded.
    - ``vfio_container``: the legacy container (``/dev/vfio/vfio``, vfio_iommu_type1); False
      is a kernel built without it (``CONFIG_VFIO_CONTAINER=n``): iommufd and cdevs only.
    - ``groups_dir``: False leaves out ``kernel/iommu_groups`` entirely, like the real
      snapshots in shared/data (the ``iommu_group`` links then dangle).
    - ``reserved_regions``: write ``kernel/iommu_groups/N/reserved_regions``.
    - ``firmware_table``: the ACPI table of the IOMMU vendor exists (firmware enabled it),
      whether or not the kernel turned the IOMMU on.
    - ``cmdline``: ``/proc/cmdline``; None picks one that matches the IOMMU settings.
    - ``numa_nodes`` and ``cpus_per_node``: for ``local_cpulist``.
    """

    devices: tuple[DeviceSpec, ...] = ()
    iommu: bool = True
    iommu_vendor: IommuVendor = "intel"
    cdev: bool = True
    noiommu: bool = False
    vfio_loaded: bool = True
    vfio_container: bool = True
    groups_dir: bool = True
    reserved_regions: bool = True
    firmware_table: bool = True
    cmdline: str | None = None
    numa_nodes: int = 1
    cpus_per_node: int = 8
    kernel_release: str = "6.8.0-48-generic"
    _by_bdf: dict[str, DeviceSpec] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _children: dict[str | None, tuple[DeviceSpec, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _vfs: dict[str, tuple[DeviceSpec, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        # Keep devices in numeric PCI order so the same description gives the same tree.
        ordered = tuple(sorted(self.devices, key=lambda d: d.key))
        object.__setattr__(self, "devices", ordered)
        by_bdf = {d.bdf: d for d in ordered}
        object.__setattr__(self, "_by_bdf", by_bdf)
        children: dict[str | None, list[DeviceSpec]] = {}
        vfs: dict[str, list[DeviceSpec]] = {}
        for dev in ordered:
            if dev.physfn is not None:
                vfs.setdefault(dev.physfn, []).append(dev)
                pf = by_bdf.get(dev.physfn)
                parent = pf.parent if pf is not None else None
            else:
                parent = dev.parent
            children.setdefault(parent, []).append(dev)
        object.__setattr__(self, "_children", {k: tuple(v) for k, v in children.items()})
        object.__setattr__(self, "_vfs", {k: tuple(v) for k, v in vfs.items()})
        self.validate()

    def device(self, bdf: str) -> DeviceSpec:
        """The function at ``bdf``; KeyError when the host has none."""
        return self._by_bdf[bdf]

    def children(self, bdf: str | None) -> tuple[DeviceSpec, ...]:
        """Functions directly behind the bridge ``bdf`` (VFs count under their PF's parent);
        ``None`` gives the functions on root buses."""
        return self._children.get(bdf, ())

    def parent_of(self, dev: DeviceSpec) -> str | None:
        """The bridge a function hangs under (a VF hangs where its PF hangs)."""
        if dev.physfn is not None:
            return self._by_bdf[dev.physfn].parent
        return dev.parent

    def virtfns(self, bdf: str) -> tuple[DeviceSpec, ...]:
        """The VFs of the PF ``bdf`` in numeric order (``virtfn0`` first)."""
        return self._vfs.get(bdf, ())

    def effective_cmdline(self) -> str:
        """``/proc/cmdline`` as written: the given one, or one that matches the knobs."""
        if self.cmdline is not None:
            return self.cmdline
        base = f"BOOT_IMAGE=/boot/vmlinuz-{self.kernel_release} root=/dev/nvme0n1p2 ro quiet"
        if self.noiommu:
            return f"{base} vfio.enable_unsafe_noiommu_mode=1"
        if not self.iommu:
            return base
        arg = {"intel": "intel_iommu=on iommu=pt", "amd": "amd_iommu=on iommu=pt"}.get(
            self.iommu_vendor, "iommu.passthrough=1"
        )
        return f"{base} {arg}"

    def validate(self) -> None:
        """Checks every function and the relations between them."""
        seen: set[str] = set()
        for dev in self.devices:
            dev.validate()
            if dev.bdf in seen:
                raise InvalidInputError(f"fake host: {dev.bdf} is described twice")
            seen.add(dev.bdf)
        if self.noiommu and self.iommu:
            raise InvalidInputError(
                "fake host: noiommu mode needs iommu=False",
                hint="the kernel only offers noiommu groups when there is no IOMMU",
            )
        if self.numa_nodes < 1 or self.cpus_per_node < 1:
            raise InvalidInputError("fake host: numa_nodes and cpus_per_node must be >= 1")
        for dev in self.devices:
            self._validate_relations(dev)

    def _validate_relations(self, dev: DeviceSpec) -> None:
        where = f"fake host: device {dev.bdf}"
        if not self.iommu and dev.iommu_group is not None:
            raise InvalidInputError(
                f"{where} has iommu_group {dev.iommu_group} but the host has no IOMMU",
                hint="drop the group or set iommu=True",
            )
        if is_vfio_driver(dev.driver) and dev.iommu_group is None and not self.noiommu:
            raise InvalidInputError(
                f"{where} is on {dev.driver} without an IOMMU group",
                hint="vfio-pci refuses such a device; give it a group or set noiommu=True",
            )
        if dev.numa_node is not None and dev.numa_node >= self.numa_nodes:
            raise InvalidInputError(f"{where}: numa_node {dev.numa_node} >= numa_nodes")
        if dev.physfn is not None:
            pf = self._by_bdf.get(dev.physfn)
            if pf is None or pf.sriov_totalvfs is None or pf.physfn is not None:
                raise InvalidInputError(
                    f"{where}: physfn {dev.physfn} is not an SR-IOV PF of this host",
                    hint="describe the PF with sriov_totalvfs set",
                )
            if dev.parent is not None and dev.parent != pf.parent:
                raise InvalidInputError(f"{where}: a VF sits beside its PF; leave parent out")
            if dev.key[0] != pf.key[0] or dev.key <= pf.key:
                raise InvalidInputError(f"{where}: a VF follows its PF in the same domain")
            if len(self.virtfns(pf.bdf)) > pf.sriov_totalvfs:
                raise InvalidInputError(f"fake host: {pf.bdf} has more VFs than sriov_totalvfs")
            return
        if dev.parent is None:
            return
        parent = self._by_bdf.get(dev.parent)
        if parent is None or not parent.is_bridge:
            raise InvalidInputError(
                f"{where}: parent {dev.parent} is not a bridge of this host",
                hint="a parent must be described too, with class 0x0604xx",
            )
        if parent.key[0] != dev.key[0] or dev.key[1] <= parent.key[1]:
            raise InvalidInputError(
                f"{where}: behind bridge {dev.parent} the bus number must be higher, same domain"
            )
        # A cycle would need a bus number lower than its own ancestor's: refused just above.


# --- compact dict form --------------------------------------------------------------------

_DEVICE_KEYS = frozenset(
    {
        "bdf", "id", "class", "subsys", "rev", "driver", "override", "group", "numa", "parent",
        "pcie", "physfn", "totalvfs", "bars", "reset", "link", "missing", "unreadable",
        "boot_vga",
    }
)  # fmt: skip
_HOST_KEYS = frozenset(
    {
        "devices", "iommu", "cdev", "noiommu", "vfio_loaded", "groups_dir", "reserved_regions",
        "firmware_table", "cmdline", "numa_nodes", "cpus_per_node", "vfio_container",
    }
)  # fmt: skip
_BAR_RE = re.compile(r"^(\d+)([KMGT]?)\s+(mem32|mem64|io)(\s+pref)?$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_LINK_RE = re.compile(r"^(\d+(?:\.\d+)? GT/s PCIe) x(\d+)$")


def _hex_pair(text: object, what: str, where: str) -> tuple[int, int]:
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", text):
        raise InvalidInputError(f"{where}: {what} must look like '10de:2330', got {text!r}")
    left, right = text.split(":")
    return int(left, 16), int(right, 16)


def _parse_bar(index: int, text: object, where: str) -> BarSpec:
    match = _BAR_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(
            f"{where}: BAR {index} {text!r} is not understood",
            hint="write e.g. '64G mem64 pref', '16M mem32', '128 io' (null for an empty BAR)",
        )
    number, unit, kind, pref = match.groups()
    return BarSpec(
        index=index,
        size=int(number) * _UNITS[unit],
        is_64bit=kind == "mem64",
        prefetchable=pref is not None,
        is_io=kind == "io",
    )


def _parse_link(text: object, where: str) -> LinkSpec:
    match = _LINK_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(f"{where}: link must look like '32.0 GT/s PCIe x16'")
    speed, width = match.group(1), int(match.group(2))
    return LinkSpec(speed, width, speed, width)


def _str_tuple(value: object, what: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{where}: {what} must be a list of strings")
    if not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{where}: {what} must be a list of strings")
    return tuple(value)


def _opt(kind: type, value: object, what: str, where: str) -> Any:
    if value is None:
        return None
    # bool is an int; refuse it where a number is meant.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInputError(f"{where}: {what} must be {kind.__name__}, got {value!r}")
    return value


def device_from_dict(data: Mapping[str, Any]) -> DeviceSpec:
    """One function from its compact form.

    Keys: ``bdf``, ``id`` ("10de:2330"), ``class`` ("030200"), and optionally ``subsys``
    ("10de:16c1"), ``rev`` (int), ``driver``, ``override``, ``group``, ``numa``, ``parent``,
    ``pcie`` (bool, default True), ``physfn``, ``totalvfs``, ``bars`` (list indexed by BAR
    number of strings like "64G mem64 pref" or null), ``reset`` (list), ``link``
    ("32.0 GT/s PCIe x16"), ``missing`` and ``unreadable`` (attribute names), ``boot_vga``
    (bool).
    """
    where = f"fake host: device {data.get('bdf', '?')!r}"
    unknown = set(data) - _DEVICE_KEYS
    if unknown:
        raise InvalidInputError(
            f"{where}: unknown keys {sorted(unknown)}", hint=f"known: {sorted(_DEVICE_KEYS)}"
        )
    bdf = data.get("bdf")
    if not isinstance(bdf, str):
        raise InvalidInputError(f"{where}: 'bdf' is required")
    vendor, device = _hex_pair(data.get("id"), "id", where)
    klass = data.get("class")
    if not isinstance(klass, str) or not re.fullmatch(r"[0-9a-fA-F]{6}", klass):
        raise InvalidInputError(f"{where}: class must be 6 hex digits like '030200'")
    sub_vendor, sub_device = _hex_pair(data.get("subsys", "0000:0000"), "subsys", where)
    bars_in = data.get("bars", [])
    if not isinstance(bars_in, Sequence) or isinstance(bars_in, str):
        raise InvalidInputError(f"{where}: bars must be a list")
    bars = tuple(_parse_bar(i, b, where) for i, b in enumerate(bars_in) if b is not None)
    link = data.get("link")
    spec = DeviceSpec(
        bdf=bdf,
        vendor=vendor,
        device=device,
        class_code=int(klass, 16),
        subsystem_vendor=sub_vendor,
        subsystem_device=sub_device,
        revision=_opt(int, data.get("rev", 0), "rev", where),
        driver=_opt(str, data.get("driver"), "driver", where),
        driver_override=_opt(str, data.get("override"), "override", where),
        iommu_group=_opt(int, data.get("group"), "group", where),
        numa_node=_opt(int, data.get("numa"), "numa", where),
        parent=_opt(str, data.get("parent"), "parent", where),
        pcie=bool(_opt(bool, data.get("pcie", True), "pcie", where)),
        physfn=_opt(str, data.get("physfn"), "physfn", where),
        sriov_totalvfs=_opt(int, data.get("totalvfs"), "totalvfs", where),
        bars=bars,
        reset_methods=_str_tuple(data.get("reset", []), "reset", where),
        link=None if link is None else _parse_link(link, where),
        missing=_str_tuple(data.get("missing", []), "missing", where),
        unreadable=_str_tuple(data.get("unreadable", []), "unreadable", where),
        boot_vga=bool(_opt(bool, data.get("boot_vga", False), "boot_vga", where)),
    )
    spec.validate()
    return spec


def host_from_dict(data: Mapping[str, Any]) -> HostSpec:
    """A host from its compact form: ``{"iommu": "intel" | "amd" | "arm" | False, "cdev": bool,
    "noiommu": bool, "devices": [...], ...}`` (see :func:`device_from_dict`)."""
    unknown = set(data) - _HOST_KEYS
    if unknown:
        raise InvalidInputError(
            f"fake host: unknown keys {sorted(unknown)}", hint=f"known: {sorted(_HOST_KEYS)}"
        )
    iommu = data.get("iommu", "intel")
    if iommu not in ("intel", "amd", "arm", False):
        raise InvalidInputError(f"fake host: iommu must be intel, amd, arm or false, not {iommu!r}")
    devices = data.get("devices", [])
    if not isinstance(devices, Sequence) or not all(isinstance(d, Mapping) for d in devices):
        raise InvalidInputError("fake host: devices must be a list of mappings")
    where = "fake host"
    return HostSpec(
        devices=tuple(device_from_dict(d) for d in devices),
        iommu=iommu is not False,
        iommu_vendor=iommu if iommu is not False else "intel",
        cdev=bool(_opt(bool, data.get("cdev", True), "cdev", where)),
        noiommu=bool(_opt(bool, data.get("noiommu", False), "noiommu", where)),
        vfio_loaded=bool(_opt(bool, data.get("vfio_loaded", True), "vfio_loaded", where)),
        vfio_container=bool(_opt(bool, data.get("vfio_container", True), "vfio_container", where)),
        groups_dir=bool(_opt(bool, data.get("groups_dir", True), "groups_dir", where)),
        reserved_regions=bool(
            _opt(bool, data.get("reserved_regions", True), "reserved_regions", where)
        ),
        firmware_table=bool(_opt(bool, data.get("firmware_table", True), "firmware_table", where)),
        cmdline=_opt(str, data.get("cmdline"), "cmdline", where),
        numa_nodes=_opt(int, data.get("numa_nodes", 1), "numa_nodes", where),
        cpus_per_node=_opt(int, data.get("cpus_per_node", 8), "cpus_per_node", where),
    )
