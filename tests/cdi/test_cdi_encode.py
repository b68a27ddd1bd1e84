"""Writing specs: round trips through YAML and JSON, quoting, determinism."""

from __future__ import annotations

import copy
import pickle

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Spec,
    dump_spec,
    parse_spec,
)
from kata_vfio.cdi.model import frozen_mapping

TRICKY_NAMES = [
    "0",
    "1:2",
    "0:1",
    "y",
    "n",
    "yes",
    "on",
    "null",
    "1e5",
    "0o10",
    "0x1F",
    "1_000",
    "08",
    ".5",
    "true",
    "a",
]


def test_names_that_look_like_other_types_survive_a_round_trip() -> None:
    devices = tuple(Device(name, ContainerEdits(env=("A=1",))) for name in TRICKY_NAMES)
    spec = Spec("0.5.0", "vendor.com/class", devices)
    text = dump_spec(spec)
    assert parse_spec(text) == spec
    # Any YAML 1.1 reader sees strings too (PyYAML's own resolver here).
    plain = yaml.safe_load(text)
    assert [d["name"] for d in plain["devices"]] == TRICKY_NAMES


def test_output_follows_the_reference_field_order_and_is_deterministic() -> None:
    spec = Spec(
        "0.7.0",
        "vendor.com/class",
        (
            Device(
                "d",
                ContainerEdits(
                    device_nodes=(
                        DeviceNode(
                            "/dev/x",
                            host_path="/dev/y",
                            type="c",
                            major=1,
                            minor=2,
                            file_mode=0o600,
                            permissions="rw",
                            uid=0,
                            gid=5,
                        ),
                    ),
                    additional_gids=(1,),
                ),
                annotations=frozen_mapping({"b": "2", "a": "1"}),
            ),
        ),
        ContainerEdits(env=("A=1",), hooks=(Hook("poststop", "/h", timeout=0),)),
        frozen_mapping({"z": "1"}),
    )
    text = dump_spec(spec).decode()
    assert (
        text.index("cdiVersion")
        < text.index("kind")
        < text.index("annotations")
        < text.index("devices")
    )
    node_keys = [
        "path",
        "hostPath",
        "type",
        "major",
        "minor",
        "fileMode",
        "permissions",
        "uid",
        "gid",
    ]
    positions = [text.index(f" {key}:") for key in node_keys]
    assert positions == sorted(positions)
    assert (
        dump_spec(spec)
        == dump_spec(copy.deepcopy(spec))
        == dump_spec(pickle.loads(pickle.dumps(spec)))
    )
    assert "timeout: 0" in text  # a zero timeout is kept: the reference keeps a set pointer
    assert dump_spec(spec, "json").decode().startswith('{\n  "cdiVersion": "0.7.0"')


def test_empty_spec_level_edits_are_left_out() -> None:
    spec = Spec("0.3.0", "v.com/c", (Device("d", ContainerEdits(env=("A=1",))),))
    assert "containerEdits" not in yaml.safe_load(dump_spec(spec))
    assert "containerEdits" in yaml.safe_load(dump_spec(spec))["devices"][0]


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=8)
NODES = st.builds(
    DeviceNode,
    path=TEXT,
    host_path=TEXT,
    type=st.sampled_from(["", "b", "c", "u", "p"]),
    major=st.integers(-(2**63), 2**63 - 1),
    minor=st.integers(0, 2**20),
    file_mode=st.none() | st.integers(0, 2**32 - 1),
    permissions=TEXT,
    uid=st.none() | st.integers(0, 2**32 - 1),
    gid=st.none() | st.integers(0, 2**32 - 1),
)
EDITS = st.builds(
    ContainerEdits,
    env=st.lists(TEXT, max_size=3).map(tuple),
    device_nodes=st.lists(NODES, max_size=2).map(tuple),
    net_devices=st.lists(st.builds(NetDevice, TEXT, TEXT), max_size=2).map(tuple),
    hooks=st.lists(
        st.builds(
            Hook,
            TEXT,
            TEXT,
            st.lists(TEXT, max_size=2).map(tuple),
            st.lists(TEXT, max_size=2).map(tuple),
            st.none() | st.integers(-5, 5),
        ),
        max_size=2,
    ).map(tuple),
    mounts=st.lists(
        st.builds(Mount, TEXT, TEXT, st.lists(TEXT, max_size=2).map(tuple), TEXT), max_size=2
    ).map(tuple),
    intel_rdt=st.none()
    | st.builds(
        IntelRdt, TEXT, TEXT, TEXT, st.none() | st.lists(TEXT, max_size=2).map(tuple), st.booleans()
    ),
    additional_gids=st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple),
)
SPECS = st.builds(
    Spec,
    version=TEXT,
    kind=TEXT,
    devices=st.lists(
        st.builds(Device, TEXT, EDITS, st.dictionaries(TEXT, TEXT, max_size=2).map(frozen_mapping)),
        max_size=3,
    ).map(tuple),
    container_edits=EDITS,
    annotations=st.dictionaries(TEXT, TEXT, max_size=2).map(frozen_mapping),
)


@settings(max_examples=150, deadline=None)
@given(SPECS, st.sampled_from(["yaml", "json"]))
def test_any_spec_document_round_trips(spec: Spec, fmt: str) -> None:
    again = parse_spec(dump_spec(spec, fmt))  # type: ignore[arg-type]
    assert again == spec
    assert dump_spec(again, "json") == dump_spec(spec, "json")
