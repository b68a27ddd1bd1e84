"""A simulator of the kernel's answers to driver-binding writes, for binding tests.

:class:`KernelSim` plays the PCI core behind the files that binding writes in a
:mod:`kata_vfio.testing` tree. Pass its :meth:`~KernelSim.write` as the ``sysfs_writer`` and
its :meth:`~KernelSim.load_module` as the ``module_loader`` of :func:`kata_vfio.binding.bind`
(or spread :meth:`~KernelSim.binding_options`), and the tree changes exactly as a real
host's would. The rules follow ``drivers/base/bus.c``, ``drivers/base/driver.c`` and
``drivers/pci/pci-driver.c`` (what ``reference/lab.md`` measured on a real kernel):

- ``driver_override``: the text up to the first newline is stored; an empty write or a
  lone newline clears it (reads back ``(null)``); 4095 bytes or more is EINVAL. Writing it
  changes no binding by itself.
- ``drivers/<drv>/unbind``: ENODEV unless the device is bound to that driver.
- ``drivers/<drv>/bind``: ENODEV when the device is missing or the driver does not match it
  (an override naming another driver never matches); EBUSY when the device already has a
  driver; a failing probe (vfio-pci on a bridge, a vfio driver without an IOMMU group) is
  the probe's errno.
- ``drivers_probe``: ENODEV for an unknown device; a bound device is left alone; otherwise
  the first matching registered driver whose probe succeeds binds (with an override, only
  that driver; a missing driver means the device stays unbound). The write succeeds even
  when nothing binds.
- Matching without an override uses each driver's ID table. vfio drivers match only through
  ``driver_override`` (their tables are override-only); ``pcieport`` takes PCI bridges;
  other drivers match the vendor:device pairs given in ``id_tables``, and by default those of
  the devices they drive when the simulator starts.

Faults for tests: :meth:`~KernelSim.fail_next` makes the next matching writes fail with an
errno (EBUSY to exercise the retry, EIO to exercise rollback); :meth:`~KernelSim.fail_probe`
makes a driver's probe of a device fail (the write still succeeds and nothing binds, as
with ``drivers_probe``); every write is recorded in :attr:`~KernelSim.log`.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kata_vfio.errors import HostIOError
from kata_vfio.testing import _fs
from kata_vfio.testing.kernel import FakeKernel
from kata_vfio.testing.spec import is_vfio_driver, parse_bdf

# driver_set_override() refuses values that would not fit a sysfs page with its newline.
_PAGE_SIZE = 4096
# Drivers whose probe never binds PCI bridges (their header type is not "normal").
_BRIDGE_CLASS = 0x0604


class HasRoots(Protocol):
    """Where a fake host's trees are (a :class:`~kata_vfio.testing.FakeHost`)."""

    @property
    def sysfs_root(self) -> str: ...
    @property
    def dev_root(self) -> str: ...


def _os_error(code: int, path: str, what: str) -> OSError:
    return OSError(code, f"{what}: {os.strerror(code)}", path)


@dataclass
class _Fault:
    suffix: str
    code: int
    remaining: int


@dataclass
class KernelSim:
    """The kernel behind a fake tree's binding files.

    ``sysfs_root``/``dev_root``: the tree (e.g. a :class:`~kata_vfio.testing.FakeHost`'s).
    ``id_tables``: extra ``driver -> [(vendor, device), ...]`` matches. ``modules``: the
    modules :meth:`load_module` can load, as ``module -> driver`` (``vfio_pci`` registers
    ``vfio-pci`` by default).
    """

    sysfs_root: str
    dev_root: str
    id_tables: Mapping[str, Iterable[tuple[int, int]]] = field(default_factory=dict)
    modules: Mapping[str, str] = field(default_factory=lambda: {"vfio_pci": "vfio-pci"})
    log: list[tuple[str, bytes]] = field(default_factory=list, init=False)
    loaded: list[str] = field(default_factory=list, init=False)
    _faults: list[_Fault] = field(default_factory=list, init=False)
    _tables: dict[str, set[tuple[int, int]]] = field(default_factory=dict, init=False)
    _probe_faults: dict[tuple[str, str], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.kernel = FakeKernel(self.sysfs_root, self.dev_root)
        for name, ids in self.id_tables.items():
            self._tables.setdefault(name, set()).update(ids)
        # What each driver drives now is what its ID table matched when it probed.
        for bdf in self._devices():
            driver = self.kernel.driver_of(bdf)
            if driver is not None and not is_vfio_driver(driver) and driver != "pci-stub":
                self._tables.setdefault(driver, set()).add(self._ids(bdf))

    @classmethod
    def for_host(
        cls,
        host: HasRoots,
        *,
        id_tables: Mapping[str, Iterable[tuple[int, int]]] | None = None,
        modules: Mapping[str, str] | None = None,
    ) -> KernelSim:
        """A simulator for anything with ``sysfs_root`` and ``dev_root`` (a FakeHost)."""
        return cls(
            host.sysfs_root,
            host.dev_root,
            id_tables=id_tables or {},
            modules=modules if modules is not None else {"vfio_pci": "vfio-pci"},
        )

    @property
    def tables(self) -> dict[str, frozenset[tuple[int, int]]]:
        """The ID tables in use (``driver -> {(vendor, device)}``): pass them as
        ``id_tables`` to a later simulator of the same tree, so that what a driver matches
        does not depend on what happens to be bound when that simulator starts."""
        return {driver: frozenset(ids) for driver, ids in self._tables.items()}

    def binding_options(self) -> dict[str, object]:
        """Keyword arguments for :func:`kata_vfio.binding.bind` and friends."""
        return {"sysfs_root": self.sysfs_root, "sysfs_writer": self.write}

    # --- faults ---------------------------------------------------------------------------

    def fail_next(self, path_suffix: str, code: int, times: int = 1) -> None:
        """The next ``times`` writes to a path ending in ``path_suffix`` fail with ``code``."""
        self._faults.append(_Fault(path_suffix, code, times))

    def fail_probe(self, driver: str, bdf: str, code: int) -> None:
        """``driver``'s probe of ``bdf`` fails with ``code`` (as vfio-pci's does for a device
        on its deny list, or a driver for hardware it cannot handle)."""
        self._probe_faults[(driver, bdf)] = code

    def _injected(self, path: str) -> int | None:
        for fault in self._faults:
            if fault.remaining > 0 and path.endswith(fault.suffix):
                fault.remaining -= 1
                return fault.code
        return None

    # --- the files ------------------------------------------------------------------------

    def write(self, path: str, data: bytes) -> None:
        """One ``write()`` to a sysfs file, answered as the kernel would (raises OSError)."""
        self.log.append((path, data))
        code = self._injected(path)
        if code is not None:
            raise _os_error(code, path, "injected fault")
        rel = posixpath.relpath(os.path.abspath(path), os.path.abspath(self.sysfs_root))
        parts = rel.split("/")
        if not os.path.lexists(path):
            raise _os_error(errno.ENOENT, path, "no such attribute")
        text = data.decode("utf-8", "replace")
        if parts[-1] == "driver_override":
            self._write_override(path, text)
        elif parts[:3] == ["bus", "pci", "drivers_probe"]:
            self._probe(path, text)
        elif len(parts) == 5 and parts[:3] == ["bus", "pci", "drivers"]:
            if parts[4] == "unbind":
                self._unbind(path, parts[3], text)
            elif parts[4] == "bind":
                self._bind(path, parts[3], text)
            else:
                raise _os_error(errno.EINVAL, path, "not simulated")
        else:
            raise _os_error(errno.EACCES, path, "not a binding file")

    def load_module(self, module: str) -> None:
        """What ``modprobe <module>`` does: registers the module's driver."""
        driver = self.modules.get(module.replace("-", "_"))
        if driver is None:
            raise RuntimeError(f"modprobe: FATAL: Module {module} not found")
        self.loaded.append(module)
        self.kernel.ensure_driver(driver)

    def _write_override(self, path: str, text: str) -> None:
        if len(text.encode()) >= _PAGE_SIZE - 1:
            raise _os_error(errno.EINVAL, path, "override too long")
        value = text.split("\x00", 1)[0]
        newline = value.find("\n")
        if newline >= 0:
            value = value[:newline]
        bdf = posixpath.basename(posixpath.dirname(path))
        self.kernel.set_driver_override(bdf, value or None)

    def _device(self, path: str, text: str) -> str:
        # bus_find_device_by_name() compares with sysfs_streq(): one trailing newline is ok.
        name = text[:-1] if text.endswith("\n") else text
        if not self._is_bdf(name) or not self.kernel.has_device(name):
            raise _os_error(errno.ENODEV, path, f"no device {name!r}")
        return name

    def _unbind(self, path: str, driver: str, text: str) -> None:
        bdf = self._device(path, text)
        if self.kernel.driver_of(bdf) != driver:
            raise _os_error(errno.ENODEV, path, f"{bdf} is not bound to {driver}")
        self.kernel.unbind(bdf)

    def _bind(self, path: str, driver: str, text: str) -> None:
        bdf = self._device(path, text)
        if not self._matches(driver, bdf):
            raise _os_error(errno.ENODEV, path, f"{driver} does not match {bdf}")
        if self.kernel.driver_of(bdf) is not None:
            raise _os_error(errno.EBUSY, path, f"{bdf} already has a driver")
        code = self._try_probe(driver, bdf)
        if code is not None:
            raise _os_error(code, path, f"probe of {bdf} by {driver} failed")

    def _probe(self, path: str, text: str) -> None:
        bdf = self._device(path, text)
        if self.kernel.driver_of(bdf) is not None:
            return
        for driver in self._registered():
            if self._matches(driver, bdf) and self._try_probe(driver, bdf) is None:
                return

    # --- the PCI core's rules -------------------------------------------------------------

    def _matches(self, driver: str, bdf: str) -> bool:
        """pci_match_device(): the override decides when set; else the ID table."""
        override = self._override(bdf)
        if override is not None:
            return override == driver
        if is_vfio_driver(driver) or driver == "pci-stub":
            return False
        if driver == "pcieport":
            return self._class(bdf) >> 8 == _BRIDGE_CLASS
        return self._ids(bdf) in self._tables.get(driver, set())

    def _try_probe(self, driver: str, bdf: str) -> int | None:
        """Binds if the driver's probe accepts the device; returns the probe's errno."""
        if is_vfio_driver(driver) and self._class(bdf) >> 8 == _BRIDGE_CLASS:
            return errno.EINVAL  # vfio_pci_probe(): only normal header types
        if (driver, bdf) in self._probe_faults:
            return self._probe_faults[(driver, bdf)]
        try:
            self.kernel.bind(bdf, driver)
        except HostIOError as exc:
            return exc.errno or errno.EINVAL
        return None

    def _registered(self) -> list[str]:
        drivers = self.kernel.sys("bus/pci/drivers")
        return sorted(os.listdir(drivers)) if os.path.isdir(drivers) else []

    def _devices(self) -> list[str]:
        devices = self.kernel.sys("bus/pci/devices")
        return sorted(n for n in os.listdir(devices) if self._is_bdf(n))

    def _attr(self, bdf: str, name: str) -> str:
        return _fs.read(self.kernel.sys(self.kernel.device_dir(bdf), name)).strip()

    def _override(self, bdf: str) -> str | None:
        value = self._attr(bdf, "driver_override")
        return None if value in ("", "(null)") else value

    def _class(self, bdf: str) -> int:
        return int(self._attr(bdf, "class"), 16)

    def _ids(self, bdf: str) -> tuple[int, int]:
        return int(self._attr(bdf, "vendor"), 16), int(self._attr(bdf, "device"), 16)

    @staticmethod
    def _is_bdf(name: str) -> bool:
        try:
            parse_bdf(name)
        except ValueError:
            return False
        return True

    # --- observation helpers for tests ----------------------------------------------------

    def state(self) -> dict[str, tuple[str | None, str | None]]:
        """``bdf -> (driver, driver_override)`` for every device, to compare snapshots."""
        return {bdf: (self.kernel.driver_of(bdf), self._override(bdf)) for bdf in self._devices()}
