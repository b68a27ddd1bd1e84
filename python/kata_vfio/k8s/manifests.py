"""Deployment: the node agent's DaemonSet, a RuntimeClass for Kata, and the containerd and Kata
configuration snippets that make the whole path work. Pure: documents and text, no I/O.

The DaemonSet runs ``kata-vfio k8s device-plugin`` on every node with exactly what it needs:

* privileged (it reads every PCI function's sysfs attributes and the VFIO nodes);
* ``hostNetwork``: the kernel sends device uevents to the host's network namespace only, and
  they are how a health change reaches the kubelet within a second;
* hostPath mounts: the kubelet's device-plugin directory (its socket and ours), the CDI spec
  directory (the specs the runtime resolves), and ``/dev/vfio`` (group and cdev nodes appear
  there after the container started; a privileged container's own ``/dev`` is a copy taken at
  start). ``/sys`` and ``/proc/cmdline`` need no mount: sysfs shows the host's PCI tree in any
  container, and the kernel command line is not namespaced.

With ``--dra`` the node agent is the DRA kubelet plugin (``kata-vfio k8s dra-plugin``) instead:
its DaemonSet mounts the kubelet's plugin and registration directories, the CDI directory,
``/sys`` and ``/dev`` (it binds groups to vfio-pci and names their nodes) and its state
directory (checkpoint and binding journal), and reads its node's name from the downward API.
It talks to the API server with a ServiceAccount whose ClusterRole allows exactly what it
does: its ResourceSlices (every verb), ResourceClaims (get) and Nodes (get, for the slices'
owner). A DeviceClass named after the driver selects its devices with CEL.

The containerd snippet turns CDI on (containerd 1.7 needs it; 2.x has it on by default) and
declares the Kata runtime with ``pod_annotations`` limited to ``io.katacontainers.*``: never
let containerd pass ``cdi.k8s.io/*`` pod annotations through, or any pod author can name any
device of the node. The Kata snippet makes Kata cold-plug what the kubelet allocated, read from
the Pod Resources socket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kata_vfio._core import __version__
from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.allocation import DEFAULT_POD_RESOURCES_SOCKET
from kata_vfio.k8s.cdispec import DEFAULT_CDI_DIR
from kata_vfio.k8s.deviceplugin import DEFAULT_PLUGIN_DIR
from kata_vfio.k8s.resources import ResourceSpec

__all__ = [
    "DEFAULT_DRA_STATE_DIR",
    "DEFAULT_DRIVER_NAME",
    "DEFAULT_IMAGE",
    "DEFAULT_RUNTIME_HANDLER",
    "containerd_snippet",
    "daemonset",
    "device_class",
    "dra_daemonset",
    "dra_rbac",
    "kata_snippet",
    "runtime_class",
]

DEFAULT_IMAGE = f"kata-vfio:{__version__}"
DEFAULT_RUNTIME_HANDLER = "kata-qemu-nvidia-gpu"
APP = "kata-vfio-device-plugin"
DRA_APP = "kata-vfio-dra-plugin"
DEFAULT_DRIVER_NAME = "vfio.kata-vfio.io"
DEFAULT_DRA_STATE_DIR = "/var/lib/kata-vfio/dra"
DRA_PLUGINS_DIR = "/var/lib/kubelet/plugins"
DRA_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
_PART_OF = {"app.kubernetes.io/part-of": "kata-vfio"}


# A DNS-1123 label (namespaces, RuntimeClass handlers: the API server's own rule).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
# An image reference: registry[:port]/path[:tag][@digest], printable ASCII without spaces.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}\Z")


def _checked(value: str, pattern: re.Pattern[str], what: str, rule: str) -> str:
    """``value`` when it matches ``pattern`` (it goes into YAML and TOML as is)."""
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidInputError(f"invalid {what} {echo(value)}", hint=rule)
    return value


def _label(value: str, what: str) -> str:
    return _checked(
        value,
        _DNS_LABEL,
        what,
        "at most 63 lower-case letters, digits and '-', starting and ending alphanumeric",
    )


def _hostpath(name: str, path: str, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


# A hostPath mount: volume name, host path, hostPath type, read-only.
_Mount = tuple[str, str, str, bool]


def _node_daemonset(
    *,
    app: str,
    container: str,
    image: str,
    namespace: str,
    args: list[str],
    mounts: Sequence[_Mount],
    grace: int,
    service_account: str | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A privileged node agent's DaemonSet, on every node (all taints tolerated), on the
    host's network (kernel uevents reach the host's network namespace only). Without
    ``service_account`` the pod gets no API token."""
    labels = {"app.kubernetes.io/name": app, **_PART_OF}
    agent: dict[str, Any] = {"name": container, "image": image, "command": ["kata-vfio"]}
    agent["args"] = args
    if env:
        agent["env"] = env
    agent["securityContext"] = {"privileged": True}
    agent["resources"] = {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    agent["volumeMounts"] = [
        {"name": name, "mountPath": path, **({"readOnly": True} if read_only else {})}
        for name, path, _, read_only in mounts
    ]
    pod: dict[str, Any] = {} if service_account is None else {"serviceAccountName": service_account}
    pod |= {
        "priorityClassName": "system-node-critical",
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
    }
    if service_account is None:
        pod["automountServiceAccountToken"] = False
    pod |= {
        "terminationGracePeriodSeconds": grace,
        "tolerations": [{"operator": "Exists"}],
        "containers": [agent],
        "volumes": [_hostpath(name, path, kind) for name, path, kind, _ in mounts],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": app, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def daemonset(
    resources: Sequence[ResourceSpec],
    *,
    image: str = DEFAULT_IMAGE,
    namespace: str = "kube-system",
    iommu_mode: str = "auto",
) -> dict[str, Any]:
    """The DaemonSet (``apps/v1``) of the device plugin serving ``resources`` (as parsed from
    ``--resource``; none: the agent's default, every NVIDIA GPU as ``nvidia.com/pgpu``).
    Raises :class:`InvalidInputError` for a malformed image or namespace."""
    _checked(
        image,
        _IMAGE,
        "image",
        "write a reference such as registry.example.com/kata-vfio:0.1.0 (no spaces)",
    )
    _label(namespace, "namespace")
    args = ["k8s", "device-plugin", f"--iommu-mode={iommu_mode}"]
    args += [f"--resource={r}" for r in resources]
    return _node_daemonset(
        app=APP,
        container="device-plugin",
        image=image,
        namespace=namespace,
        args=args,
        mounts=[
            ("device-plugins", DEFAULT_PLUGIN_DIR, "Directory", False),
            ("cdi", DEFAULT_CDI_DIR, "DirectoryOrCreate", False),
            ("dev-vfio", "/dev/vfio", "DirectoryOrCreate", True),
        ],
        grace=10,
    )


def runtime_class(
    name: str = "kata-vfio", handler: str = DEFAULT_RUNTIME_HANDLER
) -> dict[str, Any]:
    """A RuntimeClass (``node.k8s.io/v1``) for Kata pods that take VFIO devices; the overhead
    is Kata's own (the VM's memory and the shim)."""
    _label(name, "RuntimeClass name")
    _label(handler, "runtime handler")
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kata-vfio"}},
        "handler": handler,
        "overhead": {"podFixed": {"memory": "160Mi", "cpu": "250m"}},
    }


def containerd_snippet(handler: str = DEFAULT_RUNTIME_HANDLER) -> str:
    """The containerd configuration that enables CDI and declares the Kata runtime, for
    containerd 1.7 (config version 2) and 2.x (version 3)."""
    _label(handler, "runtime handler")
    runtime_type = f"io.containerd.{handler}.v2"
    return f"""\
# containerd 1.7 (/etc/containerd/config.toml, version = 2): CDI is off by default.
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  cdi_spec_dirs = ["/etc/cdi", "{DEFAULT_CDI_DIR}"]

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
  runtime_type = "{runtime_type}"
  # Only Kata's own pod annotations reach the runtime. Never add "cdi.k8s.io/*": the devices
  # come from the kubelet (CDIDevices, Pod Resources), not from what a pod author writes.
  pod_annotations = ["io.katacontainers.*"]
  privileged_without_host_devices = true

# containerd 2.x (version = 3) has CDI on by default; the same settings there:
# [plugins."io.containerd.cri.v1.runtime"]
#   enable_cdi = true
#   cdi_spec_dirs = ["/etc/cdi", "{DEFAULT_CDI_DIR}"]
# [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{handler}]
#   runtime_type = "{runtime_type}"
#   pod_annotations = ["io.katacontainers.*"]
#   privileged_without_host_devices = true
"""


def kata_snippet(root_ports: int = 8) -> str:
    """The Kata configuration (``configuration-qemu-nvidia-gpu.toml``) lines that make Kata
    cold-plug the devices the kubelet allocated: whole groups on root ports, named by the
    Pod Resources API."""
    return f"""\
[hypervisor.qemu]
# Cold-plug the pod's VFIO devices, each on its own PCIe root port, before the VM boots.
cold_plug_vfio = "root-port"
hot_plug_vfio = "no-port"
pcie_root_port = {root_ports}

[runtime]
# Ask the kubelet which devices the pod got (kubelet >= 1.34, or the KubeletPodResourcesGet
# feature gate); with this set, cdi.k8s.io/ annotations are not trusted.
pod_resource_api_sock = "{DEFAULT_POD_RESOURCES_SOCKET}"
"""


def device_class(driver: str = DEFAULT_DRIVER_NAME) -> dict[str, Any]:
    """The DeviceClass (``resource.k8s.io/v1``) of the driver's devices, named after the
    driver; a ResourceClaim asks for ``deviceClassName: <driver>``."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": driver, "labels": dict(_PART_OF)},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{driver}"'}}]},
    }


def dra_rbac(namespace: str = "kube-system") -> list[dict[str, Any]]:
    """The DRA plugin's ServiceAccount, ClusterRole and ClusterRoleBinding: its ResourceSlices,
    reading ResourceClaims, reading Nodes; nothing more."""
    meta = {"name": DRA_APP, "labels": dict(_PART_OF)}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {**meta, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": dict(meta),
            "rules": [
                {
                    "apiGroups": ["resource.k8s.io"],
                    "resources": ["resourceslices"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                },
                {
                    "apiGroups": ["resource.k8s.io"],
                    "resources": ["resourceclaims"],
                    "verbs": ["get"],
                },
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": dict(meta),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": DRA_APP,
            },
            "subjects": [{"kind": "ServiceAccount", "name": DRA_APP, "namespace": namespace}],
        },
    ]


def dra_daemonset(
    resources: Sequence[ResourceSpec],
    *,
    driver: str = DEFAULT_DRIVER_NAME,
    image: str = DEFAULT_IMAGE,
    namespace: str = "kube-system",
    iommu_mode: str = "auto",
    state_dir: str = DEFAULT_DRA_STATE_DIR,
) -> dict[str, Any]:
    """The DaemonSet (``apps/v1``) of the DRA kubelet plugin for ``driver``, serving
    ``resources`` (none: the plugin's default)."""
    args = [
        "k8s",
        "dra-plugin",
        f"--driver-name={driver}",
        "--node-name=$(NODE_NAME)",
        f"--iommu-mode={iommu_mode}",
        f"--state-dir={state_dir}",
        "--cleanup",
    ]
    args += [f"--resource={r}" for r in resources]
    return _node_daemonset(
        app=DRA_APP,
        container="dra-plugin",
        image=image,
        namespace=namespace,
        args=args,
        mounts=[
            ("plugins", DRA_PLUGINS_DIR, "DirectoryOrCreate", False),
            ("plugins-registry", DRA_REGISTRY_DIR, "Directory", False),
            ("cdi", DEFAULT_CDI_DIR, "DirectoryOrCreate", False),
            ("sys", "/sys", "Directory", False),
            ("dev", "/dev", "Directory", False),
            ("state", state_dir, "DirectoryOrCreate", False),
        ],
        grace=30,
        service_account=DRA_APP,
        env=[{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    )
