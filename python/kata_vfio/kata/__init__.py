"""Kata Containers' VFIO flows, as pure plans into a hypervisor-neutral VM plan.

* :mod:`~kata_vfio.kata.config`: the Kata configuration keys that matter for VFIO (the keys
  every hypervisor section has, and QEMU's own), Kata's validation, and the pod's
  ``io.katacontainers.config.*`` overrides;
* :mod:`~kata_vfio.kata.sandbox`: sandbox creation (CDI injection, annotation stripping, group
  expansion, a :class:`~kata_vfio.vm.plan.VmPlan`, its QEMU command line);
* :mod:`~kata_vfio.kata.container`: container creation (no second injection, inner CDI
  annotations, agent device descriptors);
* :mod:`~kata_vfio.kata.run`: the sandbox VM's life (:func:`~kata_vfio.kata.run.run_sandbox`);
* :mod:`~kata_vfio.kata.devices`, :mod:`~kata_vfio.kata.kinds`, :mod:`~kata_vfio.kata.agent`,
  :mod:`~kata_vfio.kata.hotplug`: the parts (the neutral ones live in :mod:`kata_vfio.vm`).

``samples/`` holds a Kata configuration and two bundles for trying the flow on the sample host
(see the README's "Sandbox flow").
"""

from __future__ import annotations

from kata_vfio.kata.config import KataConfig, apply_annotations, load_config
from kata_vfio.kata.container import ContainerPlan, SandboxView, plan_container
from kata_vfio.kata.hotplug import node_hotplug
from kata_vfio.kata.run import run_sandbox
from kata_vfio.kata.sandbox import SandboxPlan, plan_sandbox

__all__ = [
    "ContainerPlan",
    "KataConfig",
    "SandboxPlan",
    "SandboxView",
    "apply_annotations",
    "load_config",
    "node_hotplug",
    "plan_container",
    "plan_sandbox",
    "run_sandbox",
]
