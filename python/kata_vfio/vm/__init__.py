"""The hypervisor-neutral VM plan, after runtime-rs's ``hypervisor/src/device``: the guest's
PCIe topology (:mod:`~kata_vfio.vm.topology`), guest PCI paths (:mod:`~kata_vfio.vm.pci_path`),
the host functions passed through (:mod:`~kata_vfio.vm.devices`), where each lands in the
guest (:mod:`~kata_vfio.vm.placement`), hot-plug groups (:mod:`~kata_vfio.vm.hotplug`) and the
whole VM (:mod:`~kata_vfio.vm.plan`). A VMM backend (:mod:`kata_vfio.qemu`) turns it into a
command line and hot-plug commands; nothing here knows Kata or a VMM."""

from __future__ import annotations

from kata_vfio.vm.hotplug import HotplugGroup, SlotFunction
from kata_vfio.vm.pci_path import PciPath
from kata_vfio.vm.plan import PassedFunction, VmPlan
from kata_vfio.vm.topology import PortRequest, Topology, plan_topology

__all__ = [
    "HotplugGroup",
    "PassedFunction",
    "PciPath",
    "PortRequest",
    "SlotFunction",
    "Topology",
    "VmPlan",
    "plan_topology",
]
