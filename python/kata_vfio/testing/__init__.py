"""Realistic fake hosts for tests: sysfs, devfs and procfs trees written from a description.

Build a host from frozen records or from the compact dict form, point the scan at it::

    from kata_vfio.testing import build_host

    host = build_host(tmp_path, {
        "iommu": "intel",
        "devices": [
            {"bdf": "0000:00:01.0", "id": "8086:347a", "class": "060400",
             "driver": "pcieport", "group": 1},
            {"bdf": "0000:01:00.0", "id": "10de:2330", "class": "030200",
             "subsys": "10de:16c1", "rev": 0xA1, "parent": "0000:00:01.0",
             "driver": "vfio-pci", "group": 12, "bars": ["16M mem64", None, "128G mem64 pref"]},
        ],
    })
    kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root)

What the tree holds, as the kernel lays it out:

- ``sys/devices/pci<DDDD>:<BB>/<port>/.../<bdf>/``: one real directory per function, nested
  under its bridges, with ``vendor``, ``device``, ``subsystem_*``, ``class``, ``revision``,
  ``uevent``, ``modalias``, ``numa_node``, ``driver_override``, ``config`` (4096 bytes for
  PCIe, 256 for conventional PCI, with a real header), ``resource``, ``reset_method``, link
  attributes, ``irq``, ``local_cpulist``, ``enable``; links ``driver``, ``iommu_group``,
  ``iommu``, ``subsystem`` (relative, at the right depth); SR-IOV ``sriov_*``, ``virtfnN`` and
  ``physfn``; ``vfio-dev/vfioN/`` for functions on a vfio driver when the host has cdevs.
- ``sys/bus/pci/devices/<bdf>`` links, ``sys/bus/pci/drivers/<drv>/`` (bind, unbind, new_id,
  remove_id, ``module`` link, one link per bound function), ``drivers_probe``, ``rescan``.
- ``sys/kernel/iommu_groups/<N>/`` (``devices/``, ``type``, ``reserved_regions``),
  ``sys/class/iommu``, the ACPI table (DMAR, IVRS or IORT), ``sys/module/{vfio,vfio_pci,
  iommufd,...}``, ``sys/class/vfio``, ``sys/class/vfio-dev``, ``sys/dev/char/M:m``.
- ``dev/vfio/vfio``, ``dev/vfio/<group>`` (``noiommu-<N>``), ``dev/vfio/devices/vfioN``,
  ``dev/iommu`` as plain files (tests cannot create device nodes), and ``proc/cmdline``.

Knobs (:class:`HostSpec`): IOMMU on/off and vendor, cdev support, noiommu mode, vfio
modules loaded, ``kernel/iommu_groups`` left out (like the real snapshots), per-function
``missing`` and ``unreadable`` attributes, domains above 0xffff. An unreadable attribute is
a mode-000 file; as root (which mode 000 does not stop) it is a mode-000 directory instead,
so ``open`` works and ``read`` fails, like an attribute whose show() returns an error.

Change a built tree the way the kernel would with :class:`FakeHost`'s mutators (``bind``,
``unbind``, ``set_driver_override``, ``remove_device``, ``add_device``) or
:class:`~kata_vfio.testing.kernel.FakeKernel` on any tree;
:class:`~kata_vfio.testing.kernel_sim.KernelSim` answers the binding's sysfs writes as the
kernel does. :func:`~kata_vfio.testing.generate.generate_spec` makes large realistic hosts
(100 to 10,000 functions); :func:`build_host_cached` builds a host once into a cache
directory and reuses it. The bundled 8-GPU server behind ``--sample`` is
:func:`kata_vfio.samples.sample_host`.
"""

from __future__ import annotations

from kata_vfio.testing.builder import FakeHost, build_host, build_host_cached
from kata_vfio.testing.kernel import FakeKernel
from kata_vfio.testing.spec import (
    BarSpec,
    DeviceSpec,
    HostSpec,
    LinkSpec,
    device_from_dict,
    host_from_dict,
)
from kata_vfio.testing.topology import number_groups, switch

__all__ = [
    "BarSpec",
    "DeviceSpec",
    "FakeHost",
    "FakeKernel",
    "HostSpec",
    "LinkSpec",
    "build_host",
    "build_host_cached",
    "device_from_dict",
    "host_from_dict",
    "number_groups",
    "switch",
]
