"""Kata Containers' VFIO flows, as pure plans.

* :mod:`~kata_vfio.kata.config`: the Kata configuration keys that matter for VFIO, Kata's
  validation, and the pod's ``io.katacontainers.config.*`` overrides;
* :mod:`~kata_vfio.kata.sandbox`: sandbox creation (CDI injection, annotation stripping, group
  expansion, PCIe topology, QEMU command line);
* :mod:`~kata_vfio.kata.container`: container creation (no second injection, inner CDI
  annotations, agent device descriptors);
* :mod:`~kata_vfio.vm.topology`, :mod:`~kata_vfio.kata.devices`,
  :mod:`~kata_vfio.vm.placement`, :mod:`~kata_vfio.kata.kinds`,
  :mod:`~kata_vfio.kata.agent`, :mod:`~kata_vfio.kata.hotplug`: the parts.

``samples/`` holds a Kata configuration and two bundles for trying the flow on the sample host
(see the README's "Sandbox flow").
"""

from __future__ import annotations

from kata_vfio.kata.config import KataConfig, apply_annotations, load_config
from kata_vfio.kata.container import ContainerPlan, SandboxView, plan_container
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox

__all__ = [
    "ContainerPlan",
    "KataConfig",
    "SandboxPlan",
    "SandboxView",
    "apply_annotations",
    "load_config",
    "plan_container",
    "plan_sandbox",
]
