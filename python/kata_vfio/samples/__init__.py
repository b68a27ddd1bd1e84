"""Bundled samples for trying kata-vfio without the hardware.

:func:`sample_host` is the 8-GPU HGX-like server behind the CLI's ``--sample`` (H100s, an RTX
6000 Ada with its audio function, NVSwitches, ConnectX-7 with SR-IOV VFs, NVMe, PCIe
switches, two NUMA nodes), written as a fake sysfs/devfs/procfs tree with
:mod:`kata_vfio.testing`'s builder; :func:`sample_spec` is its description.
"""

from __future__ import annotations

from kata_vfio.samples.host import sample_host, sample_spec

__all__ = ["sample_host", "sample_spec"]
