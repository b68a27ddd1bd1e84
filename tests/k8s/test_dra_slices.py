"""The node's ResourceSlices: built from units (valid resource.k8s.io/v1 documents, attribute
names and types as the API wants them), and published through the official client to the fake
API server: create, no write when nothing changed, generation bumps, splits over 128 devices,
the Node as owner, delete_all, conflicts and failures."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from dra_fakes import DRIVER as DRA_DRIVER
from dra_fakes import NODE as DRA_NODE
from dra_fakes import PAIR, make_rig
from fake_apiserver import FakeApiServer, iter_devices
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import ApiClient

import kata_vfio
from kata_vfio import Bdf
from kata_vfio.errors import InvalidInputError, KubernetesError
from kata_vfio.k8s.dra.apiclient import from_json, to_json
from kata_vfio.k8s.dra.ports import SlicePublisher as SlicePublisherPort
from kata_vfio.k8s.dra.ports import check_node_name, device_name, is_dns_subdomain
from kata_vfio.k8s.dra.prepare import Deadline, dra_inventory, with_refusals
from kata_vfio.k8s.dra.slices import (
    MAX_DEVICES_PER_SLICE,
    PCI_BUS_ID,
    PCIE_ROOT,
    SlicePublisher,
    build_slices,
    quantity,
)
from kata_vfio.k8s.inventory import Function, Locality, Unit, build_inventory
from kata_vfio.k8s.resources import default_resources

DRIVER = "vfio.kata-vfio.io"
NODE = "worker-1"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def make_unit(
    index: int,
    *,
    functions: int = 2,
    reasons: tuple[str, ...] = (),
    numa: int | None = 1,
    bar: int | None = 64 << 30,
) -> Unit:
    bus = 0x10 + index % 0xE0
    domain = index // 0xE0
    bdfs = [Bdf.from_parts(domain, bus, 0, f) for f in range(functions)]
    return Unit(
        id=str(bdfs[0]),
        resource="nvidia.com/pgpu",
        group=100 + index,
        functions=tuple(
            Function(
                bdf=bdf,
                vendor=0x10DE,
                device=0x2330 if f == 0 else 0x22A3,
                class_code=0x030200 if f == 0 else 0x040300,
                driver="vfio-pci",
                selected=f == 0,
                vfio_bound=True,
                cdev=None,
                numa_node=numa,
            )
            for f, bdf in enumerate(bdfs)
        ),
        locality=Locality(
            numa_node=numa, root_complex=f"pci{domain:04x}:{bus:02x}", root_port=None, switch=None
        ),
        reasons=reasons,
        nodes=(f"/dev/vfio/{100 + index}",),
        largest_bar=bar,
        passthrough_driver="vfio-pci",
    )


def units(count: int) -> list[Unit]:
    return [make_unit(i) for i in range(count)]


def round_trip(document: dict[str, Any]) -> Any:
    """The document through the official model and back: a field the model does not know, or
    a value of the wrong type, fails here."""
    api = ApiClient()
    model = from_json(api, document, "V1ResourceSlice")
    assert to_json(api, model) == document
    return model


# ---- building ----------------------------------------------------------------------------


def test_a_unit_becomes_a_device_with_typed_attributes() -> None:
    (document,) = build_slices([make_unit(8)], driver=DRIVER, node=NODE)
    model = round_trip(document)
    assert model.spec.driver == DRIVER
    assert model.spec.node_name == NODE
    assert (model.spec.pool.name, model.spec.pool.generation) == (NODE, 1)
    assert model.spec.pool.resource_slice_count == 1
    assert document["metadata"] == {"generateName": f"{NODE}-{DRIVER}-"}
    (device,) = document["spec"]["devices"]
    assert device["name"] == "pci-0000-18-00-0"
    assert device["attributes"] == {
        PCI_BUS_ID: {"string": "0000:18:00.0"},
        PCIE_ROOT: {"string": "pci0000:18"},
        f"{DRIVER}/class": {"string": "030200"},
        f"{DRIVER}/deviceID": {"string": "2330"},
        f"{DRIVER}/driver": {"string": "vfio-pci"},
        f"{DRIVER}/functionCount": {"int": 2},
        f"{DRIVER}/functions": {"string": "0000:18:00.0,0000:18:00.1"},
        f"{DRIVER}/iommuGroup": {"int": 108},
        f"{DRIVER}/numaNode": {"int": 1},
        f"{DRIVER}/resource": {"string": "nvidia.com/pgpu"},
        f"{DRIVER}/vendorID": {"string": "10de"},
    }
    assert device["capacity"] == {f"{DRIVER}/largestBar": {"value": "64Gi"}}
    for name, value in device["attributes"].items():
        domain, _, identifier = name.rpartition("/")
        assert len(domain) <= 63 and re.fullmatch(r"[A-Za-z_]\w{0,31}", identifier), name
        assert len(value) == 1 and next(iter(value)) in {"int", "bool", "string", "version"}


def test_unknown_locality_and_bars_are_left_out_not_guessed() -> None:
    unit = make_unit(0, numa=None, bar=None)
    unit = Unit(**{**{f: getattr(unit, f) for f in unit.__dataclass_fields__},
                   "locality": Locality(None, "", None, None)})  # fmt: skip
    (document,) = build_slices([unit], driver=DRIVER, node=NODE)
    round_trip(document)
    (device,) = document["spec"]["devices"]
    assert PCIE_ROOT not in device["attributes"]
    assert f"{DRIVER}/numaNode" not in device["attributes"]
    assert "capacity" not in device


def test_a_long_function_list_is_left_out_but_counted() -> None:
    (document,) = build_slices([make_unit(0, functions=8)], driver=DRIVER, node=NODE)
    round_trip(document)
    attributes = document["spec"]["devices"][0]["attributes"]
    assert f"{DRIVER}/functions" not in attributes, "8 addresses exceed 64 characters"
    assert attributes[f"{DRIVER}/functionCount"] == {"int": 8}
    (five,) = build_slices([make_unit(0, functions=5)], driver=DRIVER, node=NODE)
    assert len(five["spec"]["devices"][0]["attributes"][f"{DRIVER}/functions"]["string"]) == 64


def test_unhealthy_units_are_not_published() -> None:
    (document,) = build_slices(
        [make_unit(0), make_unit(1, reasons=("on nvidia",)), make_unit(2)],
        driver=DRIVER,
        node=NODE,
    )
    assert [d["name"] for d in document["spec"]["devices"]] == [
        "pci-0000-10-00-0",
        "pci-0000-12-00-0",
    ]


def test_an_empty_pool_is_one_empty_slice() -> None:
    (document,) = build_slices([], driver=DRIVER, node=NODE, generation=4)
    round_trip(document)
    assert document["spec"]["devices"] == []
    assert document["spec"]["pool"] == {"name": NODE, "generation": 4, "resourceSliceCount": 1}


def test_more_than_128_devices_are_split_in_order() -> None:
    documents = build_slices(units(300), driver=DRIVER, node=NODE, generation=2)
    assert [len(d["spec"]["devices"]) for d in documents] == [128, 128, 44]
    assert {d["spec"]["pool"]["resourceSliceCount"] for d in documents} == {3}
    names = [dev["name"] for dev in iter_devices(documents)]
    assert names == sorted(names) and len(set(names)) == 300
    assert all(DNS_LABEL.match(n) for n in names)
    for document in documents:
        round_trip(document)


def test_the_sample_hosts_gpus_carry_their_root_complex_and_numa_node(
    sample_scan: kata_vfio.Host,
) -> None:
    inventory = build_inventory(sample_scan, default_resources(), "legacy")
    documents = build_slices(inventory.units, driver=DRIVER, node=NODE)
    devices = list(iter_devices(documents))
    healthy = inventory.resource("nvidia.com/pgpu").healthy
    assert 0 < len(healthy) < len(inventory.units), "the sample has Unhealthy GPUs too"
    for unit, device in zip(healthy, devices, strict=True):
        assert device["name"] == device_name(unit.id)
        attributes = device["attributes"]
        assert attributes[PCI_BUS_ID] == {"string": unit.id}
        assert attributes[PCIE_ROOT]["string"] == unit.locality.root_complex
        assert re.fullmatch(r"pci[0-9a-f]{4}:[0-9a-f]{2}", attributes[PCIE_ROOT]["string"])
        assert attributes[f"{DRIVER}/numaNode"] == {"int": unit.locality.numa_node}
        assert device["capacity"][f"{DRIVER}/largestBar"]["value"] == quantity(unit.largest_bar)
    assert {d["attributes"][f"{DRIVER}/numaNode"]["int"] for d in devices} == {0, 1}


@pytest.mark.parametrize("bad", ["Vfio.Example.com", "a" * 64, "x_y.io", ""])
def test_a_driver_name_that_is_no_dns_subdomain_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="driver name"):
        build_slices([], driver=bad, node=NODE)


_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.lists(_LABEL, min_size=1, max_size=8).map(".".join))
def test_dot_separated_lowercase_labels_are_dns_subdomains(name: str) -> None:
    assert is_dns_subdomain(name)
    check_node_name(name)  # no error
    assert not is_dns_subdomain(name, limit=len(name) - 1)


@given(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["A", "_", "..", "-", " ", "/", "é", "\n"]),
    st.booleans(),
)
def test_anything_else_is_no_dns_subdomain_and_a_bad_node_name_says_so(
    name: str, spoiler: str, at_end: bool
) -> None:
    bad = name + spoiler if at_end else spoiler + name
    assert not is_dns_subdomain(bad)
    with pytest.raises(InvalidInputError, match="invalid node name") as refused:
        check_node_name(bad)
    assert "spec.nodeName" in (refused.value.hint or "")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (256, "256"),
        (1536, "1536"),
        (16 << 20, "16Mi"),
        (3 << 40, "3Ti"),
        (1 << 63, "8Ei"),
    ],
)
def test_quantities_are_canonical(size: int, text: str) -> None:
    assert quantity(size) == text


_SUFFIX = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50}


@given(st.integers(0, 1 << 62))
def test_a_quantity_reads_back_as_the_same_size(size: int) -> None:
    match = re.fullmatch(r"(\d+)((?:[KMGTPE]i)?)", quantity(size))
    assert match is not None
    number, suffix = int(match[1]), match[2]
    assert number * _SUFFIX.get(suffix, 1 << 60) == size
    assert suffix == "" or number % 1024 != 0 or suffix == "Ei", "the largest suffix is used"


# ---- publishing --------------------------------------------------------------------------


@pytest.fixture
def publisher(apiserver: FakeApiServer, api_client: ApiClient) -> SlicePublisher:
    """The publisher of worker-1, whose Node exists."""
    apiserver.add_node(NODE)
    return SlicePublisher(api_client, DRIVER, NODE)


def _generations(apiserver: FakeApiServer) -> set[int]:
    return {s["spec"]["pool"]["generation"] for s in apiserver.slices()}


def test_publish_creates_the_slice_owned_by_the_node(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    node = apiserver.add_node(NODE)
    publisher: SlicePublisherPort = SlicePublisher(api_client, DRIVER, NODE)
    publisher.publish(units(3))
    (stored,) = apiserver.slices()
    assert stored["metadata"]["name"].startswith(f"{NODE}-{DRIVER}-")
    assert stored["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "name": NODE,
            "uid": node["metadata"]["uid"],
            "controller": True,
        }
    ]
    assert [d["name"] for d in stored["spec"]["devices"]] == [device_name(u.id) for u in units(3)]
    assert stored["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert [w.method for w in apiserver.writes()] == ["POST"]


def test_an_unchanged_inventory_writes_nothing(
    apiserver: FakeApiServer, api_client: ApiClient, publisher: SlicePublisher
) -> None:
    publisher.publish(units(5))
    before = apiserver.slices()
    writes = len(apiserver.writes())
    for _ in range(3):
        SlicePublisher(api_client, DRIVER, NODE).publish(units(5))  # a restarted plugin, too
        publisher.publish(units(5))
    assert len(apiserver.writes()) == writes
    assert apiserver.slices() == before


def test_a_change_bumps_the_pools_generation(
    apiserver: FakeApiServer, publisher: SlicePublisher
) -> None:
    publisher.publish(units(4))
    first = apiserver.slices()[0]
    changed = [*units(4)[:3], make_unit(3, reasons=("unplugged",))]
    publisher.publish(changed)
    (second,) = apiserver.slices()
    assert second["metadata"]["uid"] == first["metadata"]["uid"], "updated in place"
    assert second["spec"]["pool"]["generation"] == 2
    assert len(second["spec"]["devices"]) == 3
    assert [w.method for w in apiserver.writes()] == ["POST", "PUT"]
    publisher.publish(units(4))
    assert _generations(apiserver) == {3}
    assert len(apiserver.slices()[0]["spec"]["devices"]) == 4


def test_a_pool_over_128_devices_spans_slices_that_follow_the_inventory(
    apiserver: FakeApiServer, publisher: SlicePublisher
) -> None:
    publisher.publish(units(200))
    slices = apiserver.slices()
    assert sorted(len(s["spec"]["devices"]) for s in slices) == [72, MAX_DEVICES_PER_SLICE]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {2}
    assert _generations(apiserver) == {1}
    publisher.publish(units(300))
    assert sorted(len(s["spec"]["devices"]) for s in apiserver.slices()) == [44, 128, 128]
    assert _generations(apiserver) == {2}
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in apiserver.slices()} == {3}
    publisher.publish(units(100))
    (only,) = apiserver.slices()
    assert len(only["spec"]["devices"]) == 100
    assert only["spec"]["pool"] == {"name": NODE, "generation": 3, "resourceSliceCount": 1}
    assert len({d["name"] for d in iter_devices(apiserver.slices())}) == 100
    methods = [w.method for w in apiserver.writes()]
    assert methods.count("DELETE") == 2


def test_without_a_readable_node_slices_are_published_unowned_then_owned(
    apiserver: FakeApiServer, api_client: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = SlicePublisher(api_client, DRIVER, NODE)
    with caplog.at_level(logging.WARNING, logger="kata_vfio"):
        publisher.publish(units(2))
    assert "read Node worker-1 failed: HTTP 404" in caplog.text
    assert "without an owner reference" in caplog.text
    (stored,) = apiserver.slices()
    assert "ownerReferences" not in stored["metadata"]
    node = apiserver.add_node(NODE)
    publisher.publish(units(2))
    (owned,) = apiserver.slices()
    assert owned["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    assert owned["spec"]["pool"]["generation"] == 1, "only the metadata changed"


def test_delete_all_removes_only_this_nodes_slices_of_the_driver(
    apiserver: FakeApiServer, publisher: SlicePublisher
) -> None:
    publisher.publish(units(130))
    other_node = build_slices(units(1), driver=DRIVER, node="worker-2")[0]
    other_driver = build_slices(units(1), driver="gpu.example.com", node=NODE)[0]
    apiserver.put_slice(other_node)
    apiserver.put_slice(other_driver)
    publisher.delete_all()
    left = {(s["spec"]["nodeName"], s["spec"]["driver"]) for s in apiserver.slices()}
    assert left == {("worker-2", DRIVER), (NODE, "gpu.example.com")}
    (listing,) = [r for r in apiserver.requests if r.method == "GET" and r.path.endswith("slices")][
        -1:
    ]
    assert listing.query["fieldSelector"] == [f"spec.nodeName={NODE},spec.driver={DRIVER}"]
    publisher.delete_all()  # nothing left: fine


def test_another_pool_of_the_driver_on_the_node_is_left_alone(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    apiserver.add_node(NODE)
    foreign = build_slices(units(2), driver=DRIVER, node=NODE, pool="shared-pool")[0]
    apiserver.put_slice(foreign)
    SlicePublisher(api_client, DRIVER, NODE).publish(units(3))
    pools = sorted(
        (s["spec"]["pool"]["name"], len(s["spec"]["devices"])) for s in apiserver.slices()
    )
    assert pools == [("shared-pool", 2), (NODE, 3)]


def test_a_conflicting_write_is_retried_from_a_fresh_list(
    apiserver: FakeApiServer, publisher: SlicePublisher
) -> None:
    publisher.publish(units(2))
    apiserver.fail("PUT", "/resourceslices/", 409)
    publisher.publish(units(3))
    assert [w.method for w in apiserver.writes()] == ["POST", "PUT", "PUT"], "one retry"
    (stored,) = apiserver.slices()
    assert len(stored["spec"]["devices"]) == 3
    assert stored["spec"]["pool"]["generation"] == 2


def test_a_refused_write_names_the_driver_node_and_status(
    apiserver: FakeApiServer, api_client: ApiClient
) -> None:
    apiserver.add_node(NODE)
    apiserver.fail("POST", "/resourceslices$", 403)
    with pytest.raises(KubernetesError) as raised:
        SlicePublisher(api_client, DRIVER, NODE).publish(units(1))
    message = str(raised.value)
    assert message.startswith(f"publish ResourceSlices of {DRIVER} on node {NODE} failed")
    assert "HTTP 403 Forbidden" in message
    assert "RBAC" in (raised.value.hint or "")
    assert apiserver.slices() == []


def test_a_slice_changed_by_someone_else_is_put_back(
    apiserver: FakeApiServer, publisher: SlicePublisher
) -> None:
    publisher.publish(units(2))
    (stored,) = apiserver.slices()
    tampered = {**stored, "spec": {**stored["spec"], "devices": stored["spec"]["devices"][:1]}}
    apiserver.put_slice({**tampered, "metadata": {"name": "x-" + stored["metadata"]["name"]}})
    publisher.publish(units(2))
    devices = sorted(len(s["spec"]["devices"]) for s in apiserver.slices())
    assert devices == [2], "the stray slice of the pool is deleted, ours restored"
    assert _generations(apiserver) == {2}


def test_a_prepare_and_an_unprepare_rewrite_no_slice(
    apiserver: FakeApiServer, api_client: ApiClient, tmp_path: Path
) -> None:
    # The published attributes hold across binding: the driver is the passthrough one
    # (vfio-pci, before the prepare as after it), never the host driver of the moment.
    rig = make_rig(tmp_path)
    preparer = rig.preparer()
    access = rig.access()
    publisher = SlicePublisher(api_client, DRA_DRIVER, DRA_NODE)

    def healthy() -> list[Unit]:
        inventory = with_refusals(dra_inventory(access), access, preparer.journal_dir)
        return [u for u in inventory.units if u.healthy]

    publisher.publish(healthy())
    written = len(apiserver.writes())
    devices = {d["name"]: d for d in iter_devices(apiserver.slices())}
    pair = devices[device_name(PAIR)]["attributes"]
    assert pair[f"{DRA_DRIVER}/driver"] == {"string": "vfio-pci"}
    assert rig.drivers()[PAIR] == "e1000e"

    claim = rig.claims.add("5e1f0000-0000-4000-8000-00000000000c", PAIR)
    assert preparer.prepare(claim, Deadline(30)).error == ""
    assert rig.drivers()[PAIR] == "vfio-pci"
    publisher.publish(healthy())
    assert len(apiserver.writes()) == written
    assert preparer.unprepare(claim, Deadline(30)).error == ""
    publisher.publish(healthy())
    assert len(apiserver.writes()) == written
    assert {d["name"]: d for d in iter_devices(apiserver.slices())} == devices
