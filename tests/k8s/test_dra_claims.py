"""ClaimReader: a claim's allocation read through the official client from the fake API
server; the UID check, the not-allocated, gone and failing cases, each naming the claim."""

from __future__ import annotations

import pytest
from fake_apiserver import FakeApiServer
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import ApiClient

from kata_vfio.errors import ClaimError, ClaimGoneError, KubernetesError
from kata_vfio.k8s.dra.claims import ClaimReader, allocated_devices
from kata_vfio.k8s.dra.ports import AllocatedDevice, ClaimRef, ClaimSource

DRIVER = "vfio.kata-vfio.io"


def _result(request: str, device: str, *, driver: str = DRIVER, pool: str = "node-1") -> dict:
    return {"request": request, "driver": driver, "pool": pool, "device": device}


def _ref(claim: dict) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


def test_the_allocation_results_come_back_in_order(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    claim = apiserver.add_claim(
        "gpu-jobs",
        "train-0",
        [
            _result("gpus", "pci-0000-18-00-0"),
            _result("gpus", "pci-0000-2a-00-0"),
            _result("nic", "eth-0", driver="net.example.com"),
        ],
    )
    reader: ClaimSource = ClaimReader(api_client)
    assert reader.allocated(_ref(claim)) == [
        AllocatedDevice("gpus", DRIVER, "node-1", "pci-0000-18-00-0"),
        AllocatedDevice("gpus", DRIVER, "node-1", "pci-0000-2a-00-0"),
        AllocatedDevice("nic", "net.example.com", "node-1", "eth-0"),
    ]
    assert apiserver.requests[-1].path == (
        "/apis/resource.k8s.io/v1/namespaces/gpu-jobs/resourceclaims/train-0"
    )
    assert apiserver.writes() == []


def test_driver_and_pool_filters_keep_this_nodes_devices(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    claim = apiserver.add_claim(
        "ns",
        "c",
        [
            _result("a", "pci-0000-18-00-0"),
            _result("a", "pci-0000-19-00-0", pool="node-2"),
            _result("b", "x", driver="other.example.com"),
        ],
    )
    reader = ClaimReader(api_client, driver=DRIVER, pool="node-1")
    assert [d.device for d in reader.allocated(_ref(claim))] == ["pci-0000-18-00-0"]


def test_a_recreated_claim_is_gone(apiserver: FakeApiServer, api_client: ApiClient) -> None:
    old = apiserver.add_claim("ns", "c", [_result("a", "pci-0000-18-00-0")])
    apiserver.delete_claim("ns", "c")
    new = apiserver.add_claim("ns", "c", [_result("a", "pci-0000-19-00-0")])
    with pytest.raises(ClaimGoneError, match="deleted and created again") as raised:
        ClaimReader(api_client).allocated(_ref(old))
    assert new["metadata"]["uid"] in str(raised.value)
    assert "ns/c" in str(raised.value)


def test_a_deleted_claim_is_gone_not_failed(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    claim = apiserver.add_claim("ns", "c", [_result("a", "pci-0000-18-00-0")])
    apiserver.delete_claim("ns", "c")
    with pytest.raises(ClaimGoneError, match=r"ResourceClaim ns/c \(uid .*\) no longer exists"):
        ClaimReader(api_client).allocated(_ref(claim))


def test_an_unallocated_claim_is_an_error_naming_it(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    claim = apiserver.add_claim("ns", "pending", None)
    with pytest.raises(ClaimError, match=r"ResourceClaim ns/pending .* is not allocated") as raised:
        ClaimReader(api_client).allocated(_ref(claim))
    assert not isinstance(raised.value, ClaimGoneError)


@pytest.mark.parametrize(("code", "reason"), [(403, "Forbidden"), (500, "InternalError")])
def test_an_api_failure_names_the_claim_and_status(
    apiserver: FakeApiServer, api_client: ApiClient, code: int, reason: str
) -> None:
    claim = apiserver.add_claim("ns", "c", [_result("a", "pci-0000-18-00-0")])
    apiserver.fail("GET", "/resourceclaims/c$", code)
    with pytest.raises(ClaimError) as raised:
        ClaimReader(api_client).allocated(_ref(claim))
    assert isinstance(raised.value, KubernetesError)
    assert not isinstance(raised.value, ClaimGoneError)
    assert str(raised.value).startswith(f"read ResourceClaim {_ref(claim)} failed: HTTP {code}")
    assert reason in str(raised.value)
    if code == 403:
        assert "RBAC" in (raised.value.hint or "")
    # The next read succeeds: nothing is cached from the failure.
    assert ClaimReader(api_client).allocated(_ref(claim))


@pytest.mark.parametrize(
    ("namespace", "name"), [("a/b", "c"), ("ns", "../x"), ("NS", "c"), ("ns", "c" * 254)]
)
def test_a_reference_that_is_no_api_name_is_refused_before_any_request(
    apiserver: FakeApiServer, api_client: ApiClient, namespace: str, name: str
) -> None:
    with pytest.raises(ClaimError, match="is not a DNS"):
        ClaimReader(api_client).allocated(ClaimRef(namespace, name, "u"))
    assert apiserver.requests == []


def test_a_result_without_a_device_is_refused() -> None:
    document = {
        "metadata": {"uid": "u"},
        "status": {"allocation": {"devices": {"results": [{"request": "a", "driver": "d"}]}}},
    }
    with pytest.raises(ClaimError, match=r"results\[0\] has no pool"):
        allocated_devices(ClaimRef("ns", "c", "u"), document)


_texts = st.text(alphabet="abc-./0", min_size=0, max_size=6)


@given(
    st.recursive(
        st.none() | st.integers() | _texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
        max_leaves=12,
    ),
    st.lists(
        st.fixed_dictionaries(
            dict.fromkeys(("request", "driver", "pool", "device"), _texts),
        ),
        max_size=3,
    ),
)
def test_any_document_gives_devices_or_a_claim_error(garbage: object, results: list) -> None:
    ref = ClaimRef("ns", "c", "u")
    for document in (
        garbage,
        {"metadata": {"uid": "u"}, "status": garbage},
        {"metadata": {"uid": "u"}, "status": {"allocation": {"devices": garbage}}},
    ):
        try:
            devices = allocated_devices(ref, document)
        except ClaimError as exc:
            assert "ns/c" in str(exc)
        else:
            assert all(isinstance(d, AllocatedDevice) and d.device for d in devices)
    allocation = {"devices": {"results": results}}
    document = {"metadata": {"uid": "u"}, "status": {"allocation": allocation}}
    complete = all(all(r.values()) for r in results)
    try:
        devices = allocated_devices(ref, document)
    except ClaimError as exc:
        assert not complete, "only a result with an empty field is refused"
        assert "ns/c" in str(exc)
    else:
        assert complete
        assert [d.device for d in devices] == [r["device"] for r in results]
