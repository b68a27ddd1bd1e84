"""The hypervisor-neutral VM plan: the guest's PCIe topology (:mod:`~kata_vfio.vm.topology`)
and where each passed-through host function lands in the guest
(:mod:`~kata_vfio.vm.placement`). A VMM backend (:mod:`kata_vfio.qemu`) turns it into a
command line and hot-plug commands; it knows no Kata."""

from __future__ import annotations
