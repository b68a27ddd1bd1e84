"""The sandbox flow with the kubelet as the source of devices (issue 10 item 4, issue 13 item 1).

End to end on a fake node: the fake kubelet allocates through the device plugin, the Pod
Resources server reports that allocation, and ``kata-vfio sandbox plan --pod-resources``
cold-plugs the whole groups (each GPU with its audio function). ``cdi.k8s.io/`` annotations
must name none but the allocated devices; without a Pod Resources source they are trusted, and
the plan says so.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_podresources import Claim, Container
from k8s_hosts import FakeNode, HostBuilder

from kata_vfio.cli import main
from kata_vfio.k8s.allocation import SANDBOX_NAME
from kata_vfio.kata.sandbox import ANNOTATIONS_TRUSTED

SAMPLES = Path(__file__).resolve().parents[2] / "python" / "kata_vfio" / "kata" / "samples"
CONFIG = SAMPLES / "configuration-qemu-gpu.toml"
POD = ("default", "gpu-pod")  # what the sample sandbox bundle's CRI annotations name
VFIO = "cdi.k8s.io/vfio"


class Node(FakeNode):
    """Three GPUs, each with its HD-audio function in its IOMMU group, served by the agent;
    the sample sandbox bundle."""

    def __init__(self, tmp_path: Path) -> None:
        builder = HostBuilder(numa_nodes=2)
        for bus in (1, 2, 3):
            builder.add(bus, numa=bus // 3)
            builder.add(bus, "10de:22ba", "040300", function=1, group=builder.last_group,
                        numa=bus // 3, bars=["16K mem32"])  # fmt: skip
        super().__init__(tmp_path, builder.build(tmp_path / "host"))
        self.bundle = tmp_path / "sandbox"
        shutil.copytree(SAMPLES / "sandbox", self.bundle)

    def annotate(self, annotations: dict[str, str | None]) -> None:
        """Sets (None: removes) annotations of the sandbox bundle's spec."""
        path = self.bundle / "config.json"
        spec = json.loads(path.read_text())
        for key, value in annotations.items():
            if value is None:
                spec["annotations"].pop(key, None)
            else:
                spec["annotations"][key] = value
        path.write_text(json.dumps(spec))

    def plan(self, *extra: str, config: Path = CONFIG) -> int:
        """``kata-vfio sandbox plan --json`` of the bundle; the exit code."""
        args = ["--sysfs-root", self.host.sysfs_root, "--dev-root", self.host.dev_root,
                "sandbox", "plan", "--bundle", str(self.bundle), "--config", str(config),
                "--spec-dir", str(self.cdi_dir), "--runtime-dir", str(self.tmp / "run"),
                "--json", *extra]  # fmt: skip
        return main(args)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    running = Node(tmp_path)
    yield running
    running.close()


def _plan(
    node: Node, capsys: pytest.CaptureFixture[str], *extra: str, config: Path = CONFIG
) -> tuple[int, Any, str]:
    capsys.readouterr()
    code = node.plan(*extra, config=config)
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_the_kubelets_allocation_is_cold_plugged_as_whole_groups(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    names = node.admit(*POD, 2)
    node.annotate({VFIO: None})
    code, plan, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 0, err
    assert plan["cdi_devices"] == names
    assert plan["device_source"] == (
        f"the kubelet at {node.pods.socket}, pod default/gpu-pod, sources both"
    )
    functions = [[f["bdf"] for f in d["functions"]] for d in plan["devices"]]
    assert functions == [["0000:01:00.0", "0000:01:00.1"], ["0000:02:00.0", "0000:02:00.1"]]
    assert all(d["plug"] == "cold" for d in plan["devices"])
    assert ANNOTATIONS_TRUSTED not in plan["warnings"]
    assert node.pods.calls == ["Get default/gpu-pod"]


def test_annotations_must_name_only_allocated_devices(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    names = node.admit(*POD, 1)
    node.annotate({VFIO: names[0]})
    code, plan, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 0, err
    assert plan["cdi_devices"] == names
    assert plan["annotations_removed"] == ["cdi.k8s.io/vfio"]
    # A pod author asks for a GPU the kubelet gave someone else: refused, naming it.
    node.annotate({"cdi.k8s.io/more": "nvidia.com/pgpu=0000:03:00.0"})
    code, _, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 1
    assert "cdi.k8s.io/ annotations name nvidia.com/pgpu=0000:03:00.0, which the kubelet " in err
    assert "did not allocate to this pod" in err and "pod default/gpu-pod" in err
    assert "never let containerd pass cdi.k8s.io/* pod annotations through" in err


def test_a_pod_without_devices_cannot_take_any_by_annotation(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    node.pods.pods[POD] = [Container("main")]
    code, _, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 1
    assert "name nvidia.com/pgpu=0, which the kubelet did not allocate" in err
    assert "no devices" in err


def test_without_a_pod_resources_source_annotations_are_trusted_and_said_so(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    node.annotate({VFIO: "nvidia.com/pgpu=0000:03:00.0"})
    code, plan, err = _plan(node, capsys)
    assert code == 0, err
    assert plan["device_source"] == "annotations"
    assert ANNOTATIONS_TRUSTED in plan["warnings"]
    assert "never let containerd pass cdi.k8s.io/* pod annotations through" in err
    # A configured socket where nothing exists: the annotations, as Kata does, said aloud.
    code, plan, err = _plan(node, capsys, "--pod-resources", str(node.tmp / "none.sock"))
    assert code == 0, err
    assert plan["warnings"][0] == (
        f"no kubelet Pod Resources socket at {node.tmp / 'none.sock'}: the cdi.k8s.io/ "
        "annotations of pod default/gpu-pod are used, as Kata does"
    )
    # A sandbox that is no Kubernetes pod.
    node.annotate({SANDBOX_NAME: None})
    code, plan, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 0, err
    assert "(not a Kubernetes pod)" in plan["warnings"][0]


def test_the_configurations_socket_is_the_default(
    node: Node, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    names = node.admit(*POD, 1)
    config = tmp_path / "configuration.toml"
    config.write_text(
        CONFIG.read_text().replace(
            "[runtime]", f'[runtime]\npod_resource_api_sock = "{node.pods.socket}"', 1
        )
    )
    assert f'pod_resource_api_sock = "{node.pods.socket}"' in config.read_text()
    node.annotate({VFIO: None})
    code, plan, err = _plan(node, capsys, config=config)
    assert code == 0, err
    assert plan["cdi_devices"] == names
    code, plan, err = _plan(node, capsys, "--no-pod-resources", config=config)
    assert code == 0 and plan["cdi_devices"] == [] and plan["device_source"] == "none"


def test_kubelet_errors_name_the_socket_and_the_pod(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    node.annotate({SANDBOX_NAME: "gone"})
    code, _, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 1
    assert f"the kubelet at {node.pods.socket} does not know pod default/gone" in err
    assert "hint: check the pod's name and namespace" in err


def test_source_policy_and_one_function_from_two_sources(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    names = node.admit(*POD, 1)
    node.annotate({VFIO: None})
    # A DRA claim whose CDI device (another driver's spec) is the same IOMMU group.
    unit = names[0].split("=")[1]
    group = int(Path(node.host.device_path(unit), "iommu_group").resolve().name)
    (node.cdi_dir / "dra.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: k8s.vfio.example.com/unit\ndevices:\n"
        f"- name: claim-1\n  containerEdits:\n    deviceNodes:\n    - path: /dev/vfio/{group}\n"
    )
    claim = Claim(
        "default", "gpu", [("vfio.example.com", "n1", "u", ["k8s.vfio.example.com/unit=claim-1"])]
    )
    node.pods.pods[POD][0].claims.append(claim)
    code, _, err = _plan(node, capsys, "--pod-resources", node.pods.socket)
    assert code == 1
    assert f"a physical device is allocated twice: {unit} is in {names[0]}" in err
    assert "DRA claim default/gpu, driver vfio.example.com" in err
    # With one source chosen there is no clash.
    code, plan, err = _plan(
        node, capsys, "--pod-resources", node.pods.socket, "--device-sources", "device-plugin"
    )
    assert code == 0, err
    assert plan["cdi_devices"] == names
    assert plan["device_source"].endswith("sources device-plugin")
