"""The DRA driver's API client: kubeconfig or in-cluster configuration, checked files, and
failures worded as KubernetesError, against the fake API server through the real client."""

from __future__ import annotations

import socket
from pathlib import Path

import kubernetes
import pytest
from fake_apiserver import FakeApiServer

from kata_vfio.errors import InvalidInputError, KubernetesError
from kata_vfio.k8s.dra.apiclient import api_failure, default_kubeconfig, load_api_client


def test_a_kubeconfig_reaches_the_server_with_its_token(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    node = apiserver.add_node("worker-1")
    client = load_api_client(str(apiserver.write_kubeconfig(tmp_path / "kubeconfig")))
    read = kubernetes.client.CoreV1Api(client).read_node("worker-1")
    assert read.metadata.uid == node["metadata"]["uid"]
    assert apiserver.requests[-1].path == "/api/v1/nodes/worker-1"


def test_a_refused_token_is_a_kubernetes_error_with_the_status(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    apiserver.add_node("worker-1")
    path = apiserver.write_kubeconfig(tmp_path / "kubeconfig", token="wrong")
    api = kubernetes.client.CoreV1Api(load_api_client(str(path)))
    with pytest.raises(kubernetes.client.ApiException) as raised:
        api.read_node("worker-1")
    error = api_failure("read Node worker-1", raised.value)
    assert isinstance(error, KubernetesError)
    assert str(error).startswith("read Node worker-1 failed: HTTP 401 Unauthorized")
    assert "token" in (error.hint or "")


def test_a_missing_node_names_the_reason_and_message(
    apiserver: FakeApiServer, tmp_path: Path
) -> None:
    api = kubernetes.client.CoreV1Api(
        load_api_client(str(apiserver.write_kubeconfig(tmp_path / "kc")))
    )
    with pytest.raises(kubernetes.client.ApiException) as raised:
        api.read_node("nope")
    assert str(api_failure("read Node nope", raised.value)) == (
        'read Node nope failed: HTTP 404 NotFound: nodes "nope" not found'
    )


def test_an_unreachable_server_is_a_kubernetes_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with FakeApiServer() as fake:
        path = fake.write_kubeconfig(tmp_path / "kc")
    path.write_text(path.read_text().replace(fake.url, f"http://127.0.0.1:{port}"))
    client = load_api_client(str(path))
    client.configuration.retries = 0
    with pytest.raises(Exception) as raised:  # noqa: PT011 (urllib3's own class)
        kubernetes.client.CoreV1Api(client).read_node("n", _request_timeout=2)
    error = api_failure("read Node n", raised.value)
    assert "the API server did not answer" in str(error)
    assert "reachable" in (error.hint or "")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "No such file"),
        ("clusters: [\n", "is not valid YAML"),
        ("- a\n- b\n", "is not a mapping"),
        ("apiVersion: v1\nkind: Config\n", "has no clusters"),
        ("clusters: [{name: a, cluster: {server: 'http://x'}}]\n", "has no contexts"),
        (
            "clusters: [{name: a, cluster: {server: 'http://x'}}]\n"
            "contexts: [{name: c, context: {cluster: a, user: u}}]\n",
            "cannot be used",
        ),
    ],
)
def test_a_bad_kubeconfig_is_refused_naming_the_file(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInputError) as raised:
        load_api_client(str(path))
    assert str(path) in str(raised.value)
    assert complaint in str(raised.value)
    assert "--kubeconfig" in (raised.value.hint or "")


def test_a_directory_is_no_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a regular file"):
        load_api_client(str(tmp_path))


def test_without_a_kubeconfig_the_default_file_is_read(
    apiserver: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = apiserver.write_kubeconfig(tmp_path / "from-env")
    monkeypatch.setenv("KUBECONFIG", f"{path}:{tmp_path / 'second'}")
    assert default_kubeconfig() == str(path)
    assert load_api_client(None).configuration.host == apiserver.url
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_kubeconfig() == str(tmp_path / ".kube" / "config")
    with pytest.raises(InvalidInputError, match=r"\.kube/config"):
        load_api_client(None)


def test_in_a_pod_the_service_account_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    token = tmp_path / "token"
    token.write_text("sa-token")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = load_api_client(None)
    assert client.configuration.host == "https://10.96.0.1:443"
    headers = [
        s["value"]
        for s in client.configuration.auth_settings().values()
        if s["in"] == "header" and s["key"] == "authorization"
    ]
    assert [h.lower() for h in headers] == ["bearer sa-token"]
    assert client.configuration.ssl_ca_cert == str(ca)


def test_in_a_pod_without_a_service_account_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "none"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(KubernetesError, match="service account") as raised:
        load_api_client(None)
    assert "--kubeconfig" in (raised.value.hint or "")
