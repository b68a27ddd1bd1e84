"""``kata-vfio k8s manifests``: every document loads into the official Kubernetes API models
(a misspelled field is dropped by the model and the round trip fails), and the TOML snippets
parse and say what they must."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kata_vfio.cli import main
from kata_vfio.k8s.manifests import (
    containerd_snippet,
    daemonset,
    device_class,
    dra_daemonset,
    dra_rbac,
    kata_snippet,
    runtime_class,
)
from kata_vfio.k8s.resources import parse_resource
from kata_vfio.kata.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

kubernetes = pytest.importorskip("kubernetes")


class _Response:
    def __init__(self, document: dict[str, Any]) -> None:
        self.data = json.dumps(document)


def _round_trip(document: dict[str, Any], model: str) -> Any:
    api = kubernetes.client.ApiClient()
    # The client takes the response text since release 35, a response object before.
    if "content_type" in inspect.signature(api.deserialize).parameters:
        obj = api.deserialize(json.dumps(document), model, "application/json")
    else:
        obj = api.deserialize(_Response(document), model)
    assert api.sanitize_for_serialization(obj) == document
    return obj


def test_daemonset_is_a_valid_v1_daemonset() -> None:
    document = daemonset([parse_resource("nvidia.com/pgpu=10de:2330,10de:26b9")], image="reg/kv:1")
    obj = _round_trip(document, "V1DaemonSet")
    pod = obj.spec.template.spec
    (container,) = pod.containers
    assert container.security_context.privileged
    assert pod.host_network, "uevents reach the host network namespace only"
    assert container.args == [
        "k8s",
        "device-plugin",
        "--iommu-mode=auto",
        "--resource=nvidia.com/pgpu=10de:2330,10de:26b9",
    ]
    paths = {v.name: v.host_path.path for v in pod.volumes}
    assert paths == {
        "device-plugins": "/var/lib/kubelet/device-plugins",
        "cdi": "/var/run/cdi",
        "dev-vfio": "/dev/vfio",
    }
    assert {m.name for m in container.volume_mounts} == set(paths)
    assert obj.spec.selector.match_labels.items() <= obj.spec.template.metadata.labels.items()
    # The agent's default resource needs no --resource.
    assert not [a for a in daemonset([])["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith("--resource")]  # fmt: skip


def test_runtime_class_is_a_valid_v1_runtime_class() -> None:
    obj = _round_trip(runtime_class(handler="kata-qemu-nvidia-gpu"), "V1RuntimeClass")
    assert obj.handler == "kata-qemu-nvidia-gpu"
    assert obj.overhead.pod_fixed == {"memory": "160Mi", "cpu": "250m"}


def test_containerd_snippet_enables_cdi_and_filters_annotations() -> None:
    config = tomllib.loads(containerd_snippet("kata-qemu-nvidia-gpu"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["enable_cdi"] is True
    assert "/var/run/cdi" in cri["cdi_spec_dirs"]
    runtime = cri["containerd"]["runtimes"]["kata-qemu-nvidia-gpu"]
    assert runtime["runtime_type"] == "io.containerd.kata-qemu-nvidia-gpu.v2"
    assert runtime["pod_annotations"] == ["io.katacontainers.*"]
    # The containerd 2.x form, commented out, is valid TOML too.
    v3 = "\n".join(
        line.removeprefix("# ")
        for line in containerd_snippet().splitlines()
        if line.startswith(("# [", "#   "))
    )
    assert tomllib.loads(v3)["plugins"]["io.containerd.cri.v1.runtime"]["enable_cdi"] is True


def test_kata_snippet_turns_on_kubelet_cold_plug(tmp_path: Path) -> None:
    path = tmp_path / "configuration.toml"
    path.write_text(kata_snippet())
    config = load_config(str(path))
    assert config.cold_plug_vfio == "root-port"
    assert config.pod_resource_api_sock == "/var/lib/kubelet/pod-resources/kubelet.sock"


def test_cli_prints_applyable_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "manifests", "--image", "reg/kv:2", "--namespace", "gpu"]) == 0
    out = capsys.readouterr().out
    documents = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in documents] == ["DaemonSet", "RuntimeClass"]
    assert documents[0]["metadata"]["namespace"] == "gpu"
    assert "&id" not in out, "no YAML aliases"
    assert "# pod_resource_api_sock = " in out and "# [plugins." in out
    _round_trip(documents[0], "V1DaemonSet")
    assert main(["k8s", "manifests", "--only", "kata"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["runtime"]["pod_resource_api_sock"]
    assert main(["k8s", "manifests", "--json", "--only", "runtimeclass"]) == 0
    assert json.loads(capsys.readouterr().out)["runtimeclass"]["kind"] == "RuntimeClass"
    assert main(["k8s", "manifests", "--resource", "a.com/b=1", "--only", "daemonset"]) == 2


def test_dra_daemonset_runs_the_plugin_with_its_node_name_and_mounts() -> None:
    document = dra_daemonset(
        [parse_resource("nvidia.com/pgpu=10de:2330")], driver="gpu.example.com", image="r/kv:1"
    )
    obj = _round_trip(document, "V1DaemonSet")
    pod = obj.spec.template.spec
    (container,) = pod.containers
    assert container.args[:2] == ["k8s", "dra-plugin"]
    assert "--driver-name=gpu.example.com" in container.args
    assert "--node-name=$(NODE_NAME)" in container.args
    assert "--resource=nvidia.com/pgpu=10de:2330" in container.args
    (env,) = container.env
    assert (env.name, env.value_from.field_ref.field_path) == ("NODE_NAME", "spec.nodeName")
    assert container.security_context.privileged
    paths = {v.name: v.host_path.path for v in pod.volumes}
    assert sorted(paths.values()) == [
        "/dev",
        "/sys",
        "/var/lib/kata-vfio/dra",
        "/var/lib/kubelet/plugins",
        "/var/lib/kubelet/plugins_registry",
        "/var/run/cdi",
    ]
    assert {m.name: m.mount_path for m in container.volume_mounts} == paths
    state = next(a for a in container.args if a.startswith("--state-dir="))
    assert state.split("=", 1)[1] in paths.values(), "the state dir survives the pod"
    assert pod.service_account_name == "kata-vfio-dra-plugin"
    assert pod.automount_service_account_token is None, "the plugin needs its token"


def test_dra_rbac_grants_slices_claims_and_nodes_only() -> None:
    account, role, binding = dra_rbac("gpu")
    sa = _round_trip(account, "V1ServiceAccount")
    assert (sa.metadata.name, sa.metadata.namespace) == ("kata-vfio-dra-plugin", "gpu")
    rules = {
        (group, resource): sorted(rule.verbs)
        for rule in _round_trip(role, "V1ClusterRole").rules
        for group in rule.api_groups
        for resource in rule.resources
    }
    assert rules == {
        ("resource.k8s.io", "resourceslices"): sorted(
            ["get", "list", "watch", "create", "update", "patch", "delete"]
        ),
        ("resource.k8s.io", "resourceclaims"): ["get"],
        ("", "nodes"): ["get"],
    }
    bound = _round_trip(binding, "V1ClusterRoleBinding")
    assert bound.role_ref.name == role["metadata"]["name"]
    (subject,) = bound.subjects
    assert (subject.kind, subject.name, subject.namespace) == (
        "ServiceAccount",
        "kata-vfio-dra-plugin",
        "gpu",
    )


def test_device_class_selects_the_drivers_devices_with_cel() -> None:
    obj = _round_trip(device_class("gpu.example.com"), "V1DeviceClass")
    assert obj.metadata.name == "gpu.example.com"
    (selector,) = obj.spec.selectors
    assert selector.cel.expression == 'device.driver == "gpu.example.com"'


def test_cli_prints_the_dra_documents(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "manifests", "--dra", "--driver-name", "vfio.example.com"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == [
        "DaemonSet",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DeviceClass",
        "RuntimeClass",
    ]
    models = ["V1DaemonSet", "V1ServiceAccount", "V1ClusterRole", "V1ClusterRoleBinding",
              "V1DeviceClass", "V1RuntimeClass"]  # fmt: skip
    for document, model in zip(documents, models, strict=True):
        _round_trip(document, model)
    assert "vfio.example.com" in documents[4]["spec"]["selectors"][0]["cel"]["expression"]
    assert (
        "--driver-name=vfio.example.com"
        in (documents[0]["spec"]["template"]["spec"]["containers"][0]["args"])
    )
    assert main(["k8s", "manifests", "--dra", "--only", "rbac"]) == 0
    rbac = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in rbac] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    assert main(["k8s", "manifests", "--dra", "--json", "--only", "deviceclass"]) == 0
    assert json.loads(capsys.readouterr().out)["deviceclass"]["metadata"]["name"] == (
        "vfio.kata-vfio.io"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--only", "rbac"],
        ["--driver-name", "x.io"],
        ["--dra", "--driver-name", "Not_A.Domain"],
    ],
)
def test_cli_refuses_dra_pieces_without_dra_or_with_a_bad_driver(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["k8s", "manifests", *argv]) == 2
    err = capsys.readouterr().err
    assert "--dra" in err or "Not_A.Domain" in err
    assert "Traceback" not in err
