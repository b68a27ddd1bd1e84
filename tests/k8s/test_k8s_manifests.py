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
from kata_vfio.k8s.manifests import containerd_snippet, daemonset, kata_snippet, runtime_class
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
