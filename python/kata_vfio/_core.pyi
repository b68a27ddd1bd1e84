"""Typed surface of the Rust extension ``kata_vfio._core`` (checked by mypy.stubtest).

Records are immutable. Addresses are :class:`Bdf` values; numbers are ints (vendor 0x10de,
class 0x030200). Sequences are tuples in numeric order (PCI order, group order).
"""

from collections.abc import Callable, Iterable
from typing import Any, final

__version__: str

@final
class Bdf:
    """A PCI function address ``DDDD:BB:DD.F`` (domain may exceed 0xffff)."""

    def __new__(cls, text: str) -> Bdf:
        """Parse strictly: ``BB:DD.F`` means domain 0000, upper case is normalised, anything
        else (spaces, ``/``, function > 7, empty) raises :class:`kata_vfio.errors.BdfError`."""
    @staticmethod
    def from_parts(domain: int, bus: int, device: int, function: int) -> Bdf: ...
    @property
    def domain(self) -> int: ...
    @property
    def bus(self) -> int: ...
    @property
    def device(self) -> int: ...
    @property
    def function(self) -> int: ...
    @property
    def slot(self) -> Bdf:
        """Function 0 of the same device."""
    def __str__(self) -> str: ...
    def __repr__(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __lt__(self, value: Bdf, /) -> bool: ...
    def __le__(self, value: Bdf, /) -> bool: ...
    def __gt__(self, value: Bdf, /) -> bool: ...
    def __ge__(self, value: Bdf, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Bar:
    """One BAR from the device's ``resource`` file (only non-empty BARs are listed)."""

    @property
    def index(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def is_io(self) -> bool: ...
    @property
    def is_64bit(self) -> bool: ...
    @property
    def prefetchable(self) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class PciLink:
    """PCIe link attributes as sysfs prints them (``"16.0 GT/s PCIe"``, width 16)."""

    @property
    def current_speed(self) -> str | None: ...
    @property
    def current_width(self) -> int | None: ...
    @property
    def max_speed(self) -> str | None: ...
    @property
    def max_width(self) -> int | None: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class PciDevice:
    """One PCI function as the kernel shows it in sysfs."""

    @property
    def bdf(self) -> Bdf: ...
    @property
    def vendor(self) -> int: ...
    @property
    def device(self) -> int: ...
    @property
    def subsystem_vendor(self) -> int | None: ...
    @property
    def subsystem_device(self) -> int | None: ...
    @property
    def class_code(self) -> int:
        """24-bit class: base << 16 | subclass << 8 | prog-if."""
    @property
    def class_name(self) -> str:
        """A short name for the class, as lspci prints it (``3D controller``)."""
    @property
    def revision(self) -> int | None: ...
    @property
    def driver(self) -> str | None:
        """Bound driver name, None when unbound."""
    @property
    def driver_override(self) -> str | None:
        """None when unset (sysfs reads ``(null)``) or when the attribute is missing."""
    @property
    def iommu_group(self) -> int | None: ...
    @property
    def numa_node(self) -> int | None:
        """None for -1 or when absent."""
    @property
    def physfn(self) -> Bdf | None:
        """The PF of an SR-IOV VF."""
    @property
    def virtfns(self) -> tuple[Bdf, ...]:
        """The VFs of an SR-IOV PF (from ``virtfnN`` links), in numeric PCI order."""
    @property
    def sriov_totalvfs(self) -> int | None: ...
    @property
    def sriov_numvfs(self) -> int | None: ...
    @property
    def upstream(self) -> tuple[Bdf, ...]:
        """Bridges between the root complex and this device, root first (from the target of
        the ``bus/pci/devices`` link; the device itself is not included)."""
    @property
    def is_pcie(self) -> bool:
        """Kata's rule: the ``config`` file is larger than 256 bytes (stat only)."""
    @property
    def vfio_cdev(self) -> str | None:
        """``vfioN`` from ``<dev>/vfio-dev/`` when bound to a vfio driver with cdev support."""
    @property
    def sysfs_path(self) -> str:
        """The device's real directory relative to the sysfs root (``devices/pci0000:00/...``)."""
    @property
    def is_bridge(self) -> bool:
        """Class 0x0604xx (PCI-to-PCI bridge, PCIe root or switch port)."""
    @property
    def is_host_bridge(self) -> bool:
        """Class 0x0600xx."""
    @property
    def is_endpoint(self) -> bool:
        """Neither a host bridge nor a PCI bridge (NVSwitch-like 0x0680 is an endpoint)."""
    @property
    def is_vfio_bound(self) -> bool:
        """Bound to vfio-pci or a vfio variant driver (``*_vfio_pci``/``*-vfio-pci``)."""
    @property
    def boot_vga(self) -> bool:
        """``boot_vga`` reads 1 (VGA-class functions only; unreadable counts as 1)."""
    @property
    def platform_function(self) -> str | None:
        """The platform role that makes taking this function unsafe (``host-bridge``,
        ``isa-bridge``, ``legacy-bus-bridge``, ``smbus``, ``iommu``, ``interrupt-controller``,
        ``dma-controller``, ``timer``, ``rtc``, ``event-collector``, ``memory-controller``,
        ``boot-vga``, ``root-complex-peripheral`` for an unclaimed 0x0880 function on a root
        bus), None for other functions."""
    @property
    def problems(self) -> tuple[ReadProblem, ...]:
        """Attributes that exist but could not be read; their values here are None (and a
        ``driver`` problem makes the function's group unknown)."""
    # Detail attributes: None unless the scan ran with details=True.
    @property
    def has_details(self) -> bool:
        """The detail attributes were read (``scan(details=True)``, :func:`read_details`)."""
    @property
    def bars(self) -> tuple[Bar, ...] | None:
        """The non-empty BARs; None without details and when ``resource`` could not be read
        or is malformed (unknown, which is not "no BARs": see ``problems``)."""
    @property
    def large_bar(self) -> bool | None:
        """A memory BAR of 4 GiB or more (it cannot sit below 4 GiB); None when unknown."""
    @property
    def reset_methods(self) -> tuple[str, ...] | None: ...
    @property
    def link(self) -> PciLink | None: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ReadProblem:
    """A fact of one function that exists but could not be read."""

    @property
    def bdf(self) -> Bdf: ...
    @property
    def attribute(self) -> str:
        """The sysfs file or link (``uevent``, ``driver``, ``resource``), or ``device`` for the
        device directory itself."""
    @property
    def reason(self) -> str:
        """``missing``, ``permission-denied``, ``not-a-regular-file``, ``escapes-root``
        (a link leaving the sysfs root), ``invalid`` (not what the kernel writes) or
        ``os-error``."""
    @property
    def errno(self) -> int | None: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Fix:
    """What would make a blocked group assignable, as data (``kata_vfio.host.render`` words it)."""

    @property
    def action(self) -> str:
        """``bind-group``, ``bind-device``, ``unbind-bridge`` or ``none``."""
    @property
    def group(self) -> int | None:
        """The group to bind (``bind-group``)."""
    @property
    def bdf(self) -> Bdf | None:
        """The function to bind or unbind; for ``none``, the member the reason is about."""
    @property
    def because(self) -> str | None:
        """Why there is no fix: ``platform-function`` or ``unknown-member``."""
    @property
    def platform_function(self) -> str | None:
        """For ``platform-function``: which one (see :attr:`PciDevice.platform_function`)."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Blocker:
    """A group member that keeps the group from being assignable, and the fix, as data."""

    @property
    def bdf(self) -> Bdf: ...
    @property
    def driver(self) -> str | None: ...
    @property
    def group(self) -> int: ...
    @property
    def kind(self) -> str:
        """``host-driver``, ``bridge-driver``, ``unbound``, ``stub`` or ``unknown`` (the
        member cannot be read: see :attr:`problem`)."""
    @property
    def problem(self) -> ReadProblem | None:
        """What could not be read, for an ``unknown`` member."""
    @property
    def fix(self) -> Fix: ...
    @property
    def writes(self) -> tuple[tuple[str, str], ...]:
        """The fix as (path, value) sysfs writes to make by hand, in order; empty when there is
        no safe fix."""
    @property
    def breaks_viability(self) -> bool:
        """True when this member alone makes the kernel refuse the group, or may (unknown);
        False when the group is viable but the member is not ready for QEMU (unbound,
        on pci-stub)."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class IommuGroup:
    """An IOMMU group and the kernel's viability rule applied to it."""

    @property
    def id(self) -> int: ...
    @property
    def devices(self) -> tuple[Bdf, ...]:
        """Every member, in numeric PCI order."""
    @property
    def endpoints(self) -> tuple[Bdf, ...]:
        """Members that must be passed through together (all but 0x0600 and 0x0604)."""
    @property
    def viable(self) -> bool:
        """What VFIO_GROUP_GET_STATUS would say: every member is unbound, on a vfio driver,
        on pci-stub, or a bridge on pcieport."""
    @property
    def assignable(self) -> bool:
        """Viable, and every endpoint is bound to a vfio driver (ready for QEMU)."""
    @property
    def verdict(self) -> str:
        """``assignable``, ``not-ready`` (viable), ``not-viable``, ``unknown`` (a member, or
        the member list, cannot be read: neither viable nor assignable) or ``no-endpoints``."""
    @property
    def unplaced(self) -> tuple[Bdf, ...]:
        """Functions the scan could not place in any group (no ``kernel/iommu_groups`` and an
        unreadable function or ``iommu_group`` link): each may belong here, so the verdict is
        ``unknown``."""
    @property
    def listing_problem(self) -> str | None:
        """Why ``kernel/iommu_groups/N/devices`` could not be listed (a
        :attr:`ReadProblem.reason`), None when it was or when the tree has no listing."""
    @property
    def blockers(self) -> tuple[Blocker, ...]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class IommuStatus:
    """Whether the host has a working IOMMU and VFIO, and the evidence."""

    @property
    def enabled(self) -> bool: ...
    @property
    def reasons(self) -> tuple[str, ...]:
        """Human-readable evidence for the verdict, strongest first."""
    @property
    def group_count(self) -> int: ...
    @property
    def iommu_class(self) -> tuple[str, ...]:
        """Entries of ``/sys/class/iommu`` (``dmar0``, ``ivhd0``, ``smmu3.0x...``)."""
    @property
    def firmware_tables(self) -> tuple[str, ...]:
        """Which of DMAR, IVRS, IORT exist under ``/sys/firmware/acpi/tables``."""
    @property
    def cmdline(self) -> tuple[str, ...] | None:
        """IOMMU/VFIO-related kernel arguments, None when the command line is unknown."""
    @property
    def cpu_vendor(self) -> str | None:
        """``intel``, ``amd`` or ``arm`` when it can be told from firmware tables or IOMMU
        class entries; used for the boot-argument hint."""
    @property
    def vfio_module(self) -> bool: ...
    @property
    def vfio_pci_driver(self) -> bool: ...
    @property
    def iommufd_module(self) -> bool: ...
    @property
    def vfio_container_node(self) -> bool:
        """``<dev>/vfio/vfio`` exists."""
    @property
    def iommufd_node(self) -> bool:
        """``<dev>/iommu`` exists."""
    @property
    def noiommu(self) -> bool:
        """vfio's unsafe no-IOMMU mode is on (parameter or ``noiommu-N`` nodes)."""
    @property
    def unreadable(self) -> tuple[tuple[str, str], ...]:
        """Evidence that exists but could not be read: (path under its root such as
        ``dev/vfio/vfio`` or ``proc/cmdline``, :attr:`ReadProblem.reason`)."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class DevNode:
    """What a ``/dev`` path means for VFIO and, when resolved against a host, which
    functions it stands for."""

    @property
    def path(self) -> str: ...
    @property
    def kind(self) -> str:
        """``group``, ``noiommu-group``, ``cdev``, ``container`` (/dev/vfio/vfio),
        ``iommufd`` (/dev/iommu) or ``other``."""
    @property
    def group(self) -> int | None: ...
    @property
    def cdev(self) -> str | None:
        """``vfioN`` for a cdev node."""
    @property
    def bdfs(self) -> tuple[Bdf, ...]:
        """The functions behind the node (a group's members, a cdev's one function); empty
        before resolution or for control nodes."""
    @property
    def major(self) -> int | None:
        """Character device major, when known (from sysfs ``dev`` or ``stat``)."""
    @property
    def minor(self) -> int | None: ...
    @property
    def is_vfio_device(self) -> bool:
        """A group, noiommu group or cdev node (passes a device)."""
    @property
    def is_control(self) -> bool:
        """``/dev/vfio/vfio`` or ``/dev/iommu``."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def classify_devnode(path: str) -> DevNode:
    """Classify a device path by its name only (no I/O). ``/dev/vfio/12`` is a group,
    ``/dev/vfio/devices/vfio3`` a cdev, ``/dev/vfio/vfio`` and ``/dev/iommu`` control nodes;
    ``/dev/vfio/``, ``/dev/vfio/vfio/12`` and everything else are ``other``."""

@final
class HostPaths:
    """Where a host's sysfs, devfs and procfs are read and which modprobe loads its modules.
    The defaults are this machine's (``/sys``, ``/dev``, ``/proc``, ``/sbin/modprobe``)."""

    def __new__(
        cls, sysfs: str = ..., devfs: str = ..., procfs: str = ..., modprobe: str = ...
    ) -> HostPaths: ...
    @property
    def sysfs(self) -> str: ...
    @property
    def devfs(self) -> str: ...
    @property
    def procfs(self) -> str: ...
    @property
    def modprobe(self) -> str: ...
    @property
    def is_live(self) -> bool:
        """True for this machine's own ``/sys``."""
    @staticmethod
    def for_tree(sysfs: str) -> HostPaths:
        """The paths of a copied or fake host whose sysfs tree is at ``sysfs``: ``dev`` and
        ``proc`` beside it (this machine's paths for ``/sys``)."""
    def replace(
        self,
        *,
        sysfs: str | None = None,
        devfs: str | None = None,
        procfs: str | None = None,
        modprobe: str | None = None,
    ) -> HostPaths:
        """A copy with the given fields changed."""
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Host:
    """An immutable snapshot of a host's PCI devices, IOMMU groups and VFIO state."""

    @property
    def paths(self) -> HostPaths:
        """The paths this host was read from."""
    @property
    def sysfs_root(self) -> str: ...
    @property
    def dev_root(self) -> str: ...
    @property
    def proc_root(self) -> str | None: ...
    @property
    def devices(self) -> tuple[PciDevice, ...]: ...
    @property
    def unreadable(self) -> tuple[ReadProblem, ...]:
        """Functions under ``bus/pci/devices`` that could not be read (directory, bus link or
        identity), in PCI order; their groups are unknown."""
    @property
    def groups(self) -> tuple[IommuGroup, ...]: ...
    @property
    def iommu(self) -> IommuStatus: ...
    @property
    def devnodes(self) -> tuple[DevNode, ...]:
        """VFIO nodes the kernel registered (``class/vfio``, ``class/vfio-dev``,
        ``class/misc``): control nodes first, then groups and cdevs in numeric order."""
    @property
    def has_details(self) -> bool: ...
    def __len__(self) -> int: ...
    def device(self, bdf: Bdf | str) -> PciDevice:
        """The device at ``bdf``; raises :class:`kata_vfio.errors.DeviceNotFoundError`."""
    def find_device(self, bdf: Bdf | str) -> PciDevice | None: ...
    def group(self, group_id: int) -> IommuGroup:
        """Raises :class:`kata_vfio.errors.DeviceNotFoundError` for an unknown group."""
    def find_group(self, group_id: int) -> IommuGroup | None: ...
    def group_of(self, bdf: Bdf | str) -> IommuGroup | None: ...
    def resolve_devnode(self, path: str) -> DevNode:
        """Classify ``path`` (a host path such as ``/dev/vfio/12``, interpreted under the dev
        root) and fill in the functions behind it: a group's members, a cdev's function via
        ``/sys/class/vfio-dev/vfioN/device`` or, failing that, ``stat`` of the node and
        ``/sys/dev/char/MAJOR:MINOR`` (Linux major/minor encoding)."""
    def devnode_by_number(self, major: int, minor: int) -> DevNode | None:
        """The VFIO node with this character device number (as an OCI ``linux.devices``
        entry gives it), from the snapshot or ``/sys/dev/char/M:m/uevent`` ``DEVNAME``."""
    def group_node(self, bdf: Bdf | str) -> str | None:
        """``/dev/vfio/<group>`` (or ``noiommu-<group>``) for a device, None without a group."""
    def cdev_node(self, bdf: Bdf | str) -> str | None:
        """``/dev/vfio/devices/vfioN`` for a device, None when it has no vfio cdev."""

def scan(
    sysfs_root: str | HostPaths | None = None,
    dev_root: str | None = None,
    proc_root: str | None = None,
    details: bool = False,
    threads: int | None = None,
) -> Host:
    """Scan the host in one call with the GIL released: the paths of a :class:`HostPaths`
    (``scan(paths)``), or separate roots (``/sys`` and ``/dev`` by default; ``proc_root``
    defaults to ``/proc`` for the real ``/sys`` and to a ``proc`` directory beside another
    sysfs root). ``threads`` sets the workers of the device walk (default: by host size and
    CPUs)."""

def device_numbers(sysfs_root: str) -> dict[str, tuple[str, int, int]]:
    """Every device node the kernel names under ``sysfs_root``: ``DEVNAME`` (relative to
    ``/dev``) -> (``c`` or ``b``, major, minor), from ``dev/char/M:m/uevent`` and
    ``dev/block/M:m/uevent``, read beneath the root."""

def lstat_beneath(root: str, relative: str) -> tuple[int, int, int]:
    """``lstat`` of ``relative`` beneath ``root`` (links on the way followed only while they
    stay inside; the last component not followed): ``(0, st_mode, st_rdev)``, or
    ``(errno, 0, 0)`` (``EXDEV`` for a path that would leave the root)."""

def read_details(sysfs_root: str, bdf: Bdf | str) -> PciDevice:
    """Scan one device with its detail attributes (BARs, reset methods, link)."""

# --------------------------------------------------------------------------------------------
# VFIO / iommufd handles, the ABI table, and driver binding (issue 5).
#
# Handles own their fd: ``close()`` is idempotent, every handle is a context manager, and a
# method on a closed handle raises ValueError. Failed ioctls raise
# :class:`kata_vfio.errors.VfioError` (errno, path and a hint kept); binding failures raise
# :class:`kata_vfio.errors.BindError`.
# --------------------------------------------------------------------------------------------

@final
class GroupStatus:
    """``VFIO_GROUP_GET_STATUS``."""

    @property
    def flags(self) -> int: ...
    @property
    def viable(self) -> bool: ...
    @property
    def container_set(self) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class IommuInfo:
    """``VFIO_IOMMU_GET_INFO`` of a type1 container."""

    @property
    def flags(self) -> int: ...
    @property
    def iova_pgsizes(self) -> int:
        """Bitmap of IOMMU page sizes (0x40201000 = 4K, 2M, 1G)."""
    @property
    def iova_ranges(self) -> list[tuple[int, int]]:
        """Usable IOVA ranges, inclusive ``(start, end)``."""
    @property
    def dma_avail(self) -> int | None: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class DeviceInfo:
    """``VFIO_DEVICE_GET_INFO``."""

    @property
    def flags(self) -> int: ...
    @property
    def num_regions(self) -> int: ...
    @property
    def num_irqs(self) -> int: ...
    @property
    def can_reset(self) -> bool: ...
    @property
    def is_pci(self) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class RegionInfo:
    """``VFIO_DEVICE_GET_REGION_INFO`` for one region (PCI: 0-5 BARs, 6 ROM, 7 config,
    8 VGA), with its capabilities decoded."""

    @property
    def index(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def offset(self) -> int:
        """Offset of the region in the device fd (for pread/mmap)."""
    @property
    def readable(self) -> bool: ...
    @property
    def writable(self) -> bool: ...
    @property
    def mmap(self) -> bool: ...
    @property
    def sparse_mmap(self) -> list[tuple[int, int]] | None:
        """The mmap-able ``(offset, size)`` areas when only parts of the region are."""
    @property
    def region_type(self) -> tuple[int, int] | None:
        """``(type, subtype)`` of a device-specific region."""
    @property
    def msix_mappable(self) -> bool: ...
    @property
    def cap_ids(self) -> list[int]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class IrqInfo:
    """``VFIO_DEVICE_GET_IRQ_INFO`` for one index (PCI: 0 INTx, 1 MSI, 2 MSI-X, 3 ERR,
    4 REQ)."""

    @property
    def index(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def eventfd(self) -> bool: ...
    @property
    def maskable(self) -> bool: ...
    @property
    def automasked(self) -> bool: ...
    @property
    def noresize(self) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class HotResetDevice:
    """A function a bus/slot reset of the device would also reset."""

    @property
    def bdf(self) -> Bdf: ...
    @property
    def id(self) -> int:
        """Its IOMMU group, or (``HotResetInfo.dev_id``) its iommufd devid: 0 owned, -1 not."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class HotResetInfo:
    """``VFIO_DEVICE_GET_PCI_HOT_RESET_INFO``."""

    @property
    def flags(self) -> int: ...
    @property
    def dev_id(self) -> bool: ...
    @property
    def devices(self) -> tuple[HotResetDevice, ...]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class IovaRanges:
    """``IOMMU_IOAS_IOVA_RANGES``: inclusive ``(start, last)`` ranges and the alignment."""

    @property
    def ranges(self) -> list[tuple[int, int]]: ...
    @property
    def alignment(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class DmaBuffer:
    """Page-aligned, zeroed memory a device may DMA into; the size must be a positive
    multiple of the page size. A container or iommufd keeps it alive while it is mapped."""

    def __new__(cls, size: int) -> DmaBuffer: ...
    @property
    def size(self) -> int: ...
    @property
    def address(self) -> int: ...
    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def __len__(self) -> int: ...

@final
class VfioContainer:
    """``/dev/vfio/vfio``: the legacy container (one IOMMU context)."""

    @staticmethod
    def open(dev_root: str = "/dev") -> VfioContainer:
        """Opens ``<dev_root>/vfio/vfio`` and checks ``VFIO_GET_API_VERSION`` is 0."""
    @staticmethod
    def from_fd(fd: int, path: str = "/dev/vfio/vfio") -> VfioContainer:
        """Wraps a duplicate of an open container fd (the caller keeps its own)."""
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def api_version(self) -> int: ...
    def check_extension(self, extension: int) -> bool: ...
    def extensions(self) -> list[tuple[int, str, bool]]:
        """``(number, name, supported)`` for TYPE1 .. UPDATE_VADDR."""
    def set_iommu(self, iommu_type: int = 3, allow_noiommu: bool = False) -> None:
        """``VFIO_SET_IOMMU`` (TYPE1v2 by default) once a group is attached; the no-IOMMU
        type (8) only with ``allow_noiommu``."""
    def iommu_info(self) -> IommuInfo: ...
    def map_dma(
        self, buffer: DmaBuffer, iova: int, readable: bool = True, writable: bool = True
    ) -> None:
        """``VFIO_IOMMU_MAP_DMA`` of the whole buffer; the container keeps the buffer alive
        until the range is unmapped."""
    def unmap_dma(self, iova: int, size: int) -> int:
        """Returns the number of bytes unmapped."""
    def close(self) -> None:
        """Unmaps every range this container mapped, then closes the fd (idempotent): the
        kernel's container outlives the fd while a group is attached."""
    def __enter__(self) -> VfioContainer: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

@final
class VfioGroup:
    """``/dev/vfio/<N>``: a legacy group (single-open: EBUSY while another process has it)."""

    @staticmethod
    def open(group_id: int, dev_root: str = "/dev", noiommu: bool = False) -> VfioGroup: ...
    @staticmethod
    def from_fd(fd: int, group_id: int, path: str) -> VfioGroup: ...
    @property
    def id(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def status(self) -> GroupStatus: ...
    def set_container(self, container: VfioContainer) -> None:
        """EPERM when the group is not viable, EBUSY when it is in another container."""
    def unset_container(self) -> None: ...
    def get_device(self, bdf: Bdf | str, vf_token: str | None = None) -> VfioDevice:
        """``VFIO_GROUP_GET_DEVICE_FD`` (the fd is the ioctl's return value)."""
    def close(self) -> None: ...
    def __enter__(self) -> VfioGroup: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

@final
class VfioDevice:
    """A VFIO device fd, from a group or a cdev (``/dev/vfio/devices/vfioN``)."""

    @staticmethod
    def open_cdev(cdev: str, dev_root: str = "/dev") -> VfioDevice:
        """Opens the cdev; usable after ``bind_iommufd`` and ``attach_ioas``."""
    @staticmethod
    def from_fd(fd: int, name: str, path: str) -> VfioDevice: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def detach_fd(self) -> int:
        """Gives up the fd (the caller owns it now) and closes the handle."""
    def info(self) -> DeviceInfo: ...
    def region_info(self, index: int) -> RegionInfo: ...
    def regions(self) -> tuple[RegionInfo, ...]:
        """Every region the kernel reports (indexes refused with EINVAL are left out)."""
    def irq_info(self, index: int) -> IrqInfo: ...
    def irqs(self) -> tuple[IrqInfo, ...]: ...
    def reset(self) -> None: ...
    def hot_reset_info(self) -> HotResetInfo: ...
    def read_region(self, region: RegionInfo, offset: int, length: int) -> bytes: ...
    def bind_iommufd(self, iommufd: IommuFd) -> int:
        """``VFIO_DEVICE_BIND_IOMMUFD``; returns the devid."""
    def attach_ioas(self, pt_id: int) -> int: ...
    def detach_ioas(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> VfioDevice: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

@final
class IommuFd:
    """``/dev/iommu`` (Linux 6.2+): I/O address spaces and their mappings."""

    @staticmethod
    def open(dev_root: str = "/dev") -> IommuFd: ...
    @staticmethod
    def from_fd(fd: int, path: str = "/dev/iommu") -> IommuFd: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def ioas_alloc(self) -> int: ...
    def destroy(self, object_id: int) -> None: ...
    def iova_ranges(self, ioas_id: int) -> IovaRanges: ...
    def map(
        self,
        ioas_id: int,
        buffer: DmaBuffer,
        iova: int | None = None,
        readable: bool = True,
        writable: bool = True,
    ) -> int:
        """``IOMMU_IOAS_MAP`` at ``iova`` (or where the kernel chooses); returns the IOVA."""
    def unmap(self, ioas_id: int, iova: int, length: int) -> int: ...
    def get_option(self, option_id: int, object_id: int = 0) -> int: ...
    def set_option(self, option_id: int, value: int, object_id: int = 0) -> None: ...
    def close(self) -> None:
        """Unmaps every range this handle mapped, then closes the fd (idempotent): a bound
        cdev keeps the kernel's IOAS alive after the fd."""
    def __enter__(self) -> IommuFd: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

def vfio_abi() -> dict[str, Any]:
    """Every struct size and field ``(offset, size)``, ioctl number and constant the core
    uses, under the kernel's names, each with its header (``linux/vfio.h`` or
    ``linux/iommufd.h``): ``{"structs": {name: {"header", "size", "fields"}}, "ioctls":
    {name: (header, number)}, "constants": {name: (header, value)}}``."""

@final
class SysfsWrite:
    """One sysfs write, performed or (dry run) planned."""

    @property
    def path(self) -> str: ...
    @property
    def value(self) -> str:
        """Exactly the text written (``"\\n"`` clears ``driver_override``)."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class BindOutcome:
    """What bind, unbind or restore did (or would do) to one device."""

    @property
    def bdf(self) -> Bdf: ...
    @property
    def group(self) -> int | None: ...
    @property
    def driver_before(self) -> str | None: ...
    @property
    def override_before(self) -> str | None: ...
    @property
    def driver_after(self) -> str | None: ...
    @property
    def override_after(self) -> str | None: ...
    @property
    def target(self) -> str | None: ...
    @property
    def action(self) -> str:
        """``bound``, ``already-bound``, ``restored``, ``unbound`` or ``unchanged``."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class BindReport:
    """The result of a bind, unbind or restore."""

    @property
    def dry_run(self) -> bool: ...
    @property
    def devices(self) -> tuple[BindOutcome, ...]: ...
    @property
    def writes(self) -> tuple[SysfsWrite, ...]: ...
    @property
    def modules(self) -> tuple[str, ...]: ...
    @property
    def messages(self) -> tuple[str, ...]: ...
    @property
    def overridden(self) -> tuple[str, ...]:
        """The refusals ``force=True`` overrode, one per reason."""
    @property
    def problems(self) -> tuple[str, ...]:
        """Journal files that were damaged and skipped, each saying why."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class JournalEntry:
    """A device's driver and override before kata-vfio bound it."""

    @property
    def bdf(self) -> Bdf: ...
    @property
    def group(self) -> int | None: ...
    @property
    def driver(self) -> str | None: ...
    @property
    def driver_override(self) -> str | None: ...
    @property
    def target(self) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def bind_devices(
    devices: Iterable[Bdf | str],
    *,
    sysfs_root: str = "/sys",
    dev_root: str = "/dev",
    proc_root: str = "/proc",
    state_dir: str = "/run/kata-vfio",
    group: bool | None = None,
    driver: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    modules_root: str = "/",
    kernel_release: str | None = None,
    modprobe: str | None = None,
    module_loader: Callable[[str], object] | None = None,
    sysfs_writer: Callable[[str, bytes], object] | None = None,
) -> BindReport:
    """Use :func:`kata_vfio.binding.bind` (documented there)."""

def restore_devices(
    devices: Iterable[Bdf | str] | None = None,
    *,
    sysfs_root: str = "/sys",
    dev_root: str = "/dev",
    proc_root: str = "/proc",
    state_dir: str = "/run/kata-vfio",
    force: bool = False,
    dry_run: bool = False,
    sysfs_writer: Callable[[str, bytes], object] | None = None,
) -> BindReport:
    """Use :func:`kata_vfio.binding.restore`."""

def unbind_devices(
    devices: Iterable[Bdf | str],
    *,
    sysfs_root: str = "/sys",
    dev_root: str = "/dev",
    proc_root: str = "/proc",
    state_dir: str = "/run/kata-vfio",
    group: bool | None = None,
    force: bool = False,
    dry_run: bool = False,
    sysfs_writer: Callable[[str, bytes], object] | None = None,
) -> BindReport:
    """Use :func:`kata_vfio.binding.unbind`."""

def binding_journal(
    state_dir: str = "/run/kata-vfio",
) -> tuple[tuple[JournalEntry, ...], tuple[str, ...]]:
    """The journal in ``state_dir``: its usable entries in numeric PCI order, and one message
    per damaged file (skipped). Use :func:`kata_vfio.binding.read_journal`."""

# --------------------------------------------------------------------------------------------
# Kernel uevents (NETLINK_KOBJECT_UEVENT), for the node agent (issue 10).
# --------------------------------------------------------------------------------------------

@final
class Uevent:
    """One kernel uevent (``bind@/devices/pci0000:00/...`` with its ``KEY=VALUE`` fields)."""

    @property
    def action(self) -> str: ...
    @property
    def devpath(self) -> str:
        """Relative to the sysfs root, starting with ``/devices/``."""
    @property
    def subsystem(self) -> str | None: ...
    @property
    def seqnum(self) -> int | None: ...
    @property
    def env(self) -> dict[str, str]:
        """Every field the kernel sent (ACTION, DEVPATH, SUBSYSTEM, DRIVER, ...)."""
    def get(self, key: str) -> str | None: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class UeventBatch:
    """What one :meth:`UeventMonitor.receive` read."""

    @property
    def events(self) -> list[Uevent]: ...
    @property
    def overflowed(self) -> bool:
        """The socket buffer overflowed and the kernel dropped events: rescan."""
    def __len__(self) -> int: ...

@final
class UeventMonitor:
    """A netlink socket on the kernel's uevent multicast group; only datagrams from the
    kernel itself are accepted. A context manager; ``close()`` is idempotent."""

    @staticmethod
    def open(subsystems: list[str] | None = None) -> UeventMonitor:
        """Subscribes, keeping only events of ``subsystems`` (all when None); raises
        :class:`kata_vfio.errors.HostIOError` where netlink is unavailable."""
    def receive(self, timeout: float | None = None) -> UeventBatch:
        """Waits up to ``timeout`` seconds (None: forever) with the GIL released, then
        drains what is pending; empty after the timeout or a signal."""
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> UeventMonitor: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

def parse_uevent(data: bytes) -> Uevent | None:
    """Parses one datagram as the kernel sends it; None for anything else."""
