"""Applying container edits to OCI specs: every category, in the reference's order and rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cdi_support import oci_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio.cdi import (
    ContainerEdits,
    DeviceNode,
    Hook,
    HostDevice,
    HostDeviceTable,
    IntelRdt,
    Mount,
    NetDevice,
    inject_edits,
)
from kata_vfio.cdi.edits import apply_edits, device_entry, mount_depth, mount_entry
from kata_vfio.cdi.hostdev import NodeCompletionError, complete_device_node, lstat_device
from kata_vfio.errors import CdiInjectionError, OciSpecError


def inject(spec: dict[str, Any], *edits: ContainerEdits, lookup: Any = None) -> dict[str, Any]:
    return inject_edits(spec, edits, lookup=lookup or HostDeviceTable({})).spec


def bare() -> dict[str, Any]:
    return {"ociVersion": "1.2.0"}


# env


def test_env_is_replaced_in_place_by_name() -> None:
    spec = bare() | {"process": {"env": ["FOO=old", "BAR=old"]}}
    result = inject(spec, ContainerEdits(env=("FOO=new", "BAZ=1")))
    assert result["process"]["env"] == ["FOO=new", "BAR=old", "BAZ=1"]


def test_env_duplicates_within_the_edits_collapse() -> None:
    assert inject(bare(), ContainerEdits(env=("FOO=old", "FOO=new")))["process"]["env"] == [
        "FOO=new"
    ]


def test_env_key_is_text_before_the_first_equals() -> None:
    spec = bare() | {"process": {"env": ["A=b=c", "B"]}}
    result = inject(spec, ContainerEdits(env=("A=x", "B=y")))
    assert result["process"]["env"] == ["A=x", "B=y"]


def test_no_env_no_process() -> None:
    assert "process" not in inject(bare(), ContainerEdits(mounts=(Mount("/a", "/b"),)))


# device nodes


def test_device_node_completed_from_the_host(host_dev: HostDeviceTable) -> None:
    result = inject(
        bare(), ContainerEdits(device_nodes=(DeviceNode("/dev/vfio/14"),)), lookup=host_dev
    )
    assert result["linux"]["devices"] == [
        {"path": "/dev/vfio/14", "type": "c", "major": 243, "minor": 0, "fileMode": 0o600}
    ]
    assert result["linux"]["resources"]["devices"] == [
        {"allow": True, "type": "c", "major": 243, "minor": 0, "access": "rwm"}
    ]


def test_host_path_is_looked_up_and_container_path_written(host_dev: HostDeviceTable) -> None:
    edits = ContainerEdits(device_nodes=(DeviceNode("/dev/kvtest0", host_path="/dev/null"),))
    result = inject(bare(), edits, lookup=host_dev)
    assert result["linux"]["devices"][0]["path"] == "/dev/kvtest0"
    assert (result["linux"]["devices"][0]["major"], result["linux"]["devices"][0]["minor"]) == (
        1,
        3,
    )
    assert host_dev.lookups == ["/dev/null"]


@pytest.mark.parametrize(
    ("permissions", "access"), [("", "rwm"), ("r", "r"), ("rw", "rw"), ("none", None)]
)
def test_cgroup_access_from_permissions(
    host_dev: HostDeviceTable, permissions: str, access: str | None
) -> None:
    edits = ContainerEdits(device_nodes=(DeviceNode("/dev/sda", permissions=permissions),))
    rule = inject(bare(), edits, lookup=host_dev)["linux"]["resources"]["devices"][0]
    assert rule["type"] == "b"
    assert rule.get("access") == access


def test_fifo_and_u_nodes_get_no_cgroup_rule(host_dev: HostDeviceTable) -> None:
    edits = ContainerEdits(
        device_nodes=(DeviceNode("/dev/fifo0"), DeviceNode("/dev/u", type="u", major=4, minor=1))
    )
    result = inject(bare(), edits, lookup=host_dev)
    assert [d["type"] for d in result["linux"]["devices"]] == ["p", "u"]
    assert "resources" not in result["linux"]


def test_device_replaced_by_path_ends_up_last(host_dev: HostDeviceTable) -> None:
    spec = bare() | {
        "linux": {
            "devices": [
                {"path": "/dev/vfio/14", "type": "c", "major": 1, "minor": 1},
                {"path": "/dev/other", "type": "c", "major": 2, "minor": 2},
            ]
        }
    }
    result = inject_edits(
        spec, [ContainerEdits(device_nodes=(DeviceNode("/dev/vfio/14"),))], lookup=host_dev
    )
    assert [d["path"] for d in result.spec["linux"]["devices"]] == ["/dev/other", "/dev/vfio/14"]
    assert result.spec["linux"]["devices"][1]["major"] == 243
    assert result.replaced.devices == (
        {"path": "/dev/vfio/14", "type": "c", "major": 1, "minor": 1},
    )


def test_uid_and_gid_default_to_the_process_user_when_above_zero(host_dev: HostDeviceTable) -> None:
    edits = ContainerEdits(
        device_nodes=(DeviceNode("/dev/vfio/14"), DeviceNode("/dev/null", uid=7))
    )
    user = bare() | {"process": {"user": {"uid": 1000, "gid": 0}}}
    devices = inject(user, edits, lookup=host_dev)["linux"]["devices"]
    assert (devices[0]["uid"], "gid" in devices[0]) == (1000, False)
    assert devices[1]["uid"] == 7
    root = inject(oci_spec(), edits, lookup=host_dev)["linux"]["devices"]
    assert "uid" not in root[0] and "gid" not in root[0]


def test_same_device_twice_duplicates_rules_but_not_nodes(host_dev: HostDeviceTable) -> None:
    one = ContainerEdits(
        device_nodes=(DeviceNode("/dev/vfio/14"),), hooks=(Hook("poststop", "/h"),)
    )
    result = inject(bare(), one, one, lookup=host_dev)
    assert len(result["linux"]["devices"]) == 1
    assert len(result["linux"]["resources"]["devices"]) == 2
    assert len(result["hooks"]["poststop"]) == 2


# filling in device nodes (fillMissingInfo)


def table(**nodes: HostDevice) -> HostDeviceTable:
    return HostDeviceTable({f"/dev/{k}": v for k, v in nodes.items()}, others=("/dev/link",))


def test_minimal_nodes_skip_the_checks_but_take_the_file_mode() -> None:
    lookup = table(sda=HostDevice("b", 8, 0, 0o660))
    done = complete_device_node(DeviceNode("/dev/sda", type="c", major=10, minor=0), lookup)
    assert (done.type, done.major, done.minor, done.file_mode) == ("c", 10, 0, 0o660)
    assert done.host_path == "/dev/sda"


def test_minimal_nodes_survive_a_missing_host_node() -> None:
    for minimal in (DeviceNode("/dev/gone", type="c", major=1), DeviceNode("/dev/gone", type="p")):
        done = complete_device_node(minimal, table())
        assert done.file_mode is None
        assert done.host_path == "/dev/gone"


def test_major_zero_takes_both_numbers_from_the_host() -> None:
    lookup = table(x=HostDevice("c", 5, 9, 0o600))
    done = complete_device_node(DeviceNode("/dev/x", minor=3), lookup)
    assert (done.major, done.minor) == (5, 9)


def test_type_mismatch_and_u_against_c() -> None:
    lookup = table(x=HostDevice("c", 5, 9, 0o600))
    with pytest.raises(NodeCompletionError, match=r"host type mismatch \(b, c\)"):
        complete_device_node(DeviceNode("/dev/x", type="b"), lookup)
    with pytest.raises(NodeCompletionError, match=r"host type mismatch \(u, c\)"):
        complete_device_node(DeviceNode("/dev/x", type="u"), lookup)


def test_fifo_keeps_its_numbers() -> None:
    lookup = table(f=HostDevice("p", 0, 0, 0o644))
    done = complete_device_node(DeviceNode("/dev/f", type="p"), lookup)
    assert (done.type, done.major, done.minor, done.file_mode) == ("p", 0, 0, 0o644)


def test_symlinks_and_missing_nodes_fail_unless_minimal() -> None:
    with pytest.raises(
        NodeCompletionError, match='failed to stat CDI host device "/dev/link": not a device node'
    ):
        complete_device_node(DeviceNode("/dev/link"), table())
    with pytest.raises(NodeCompletionError, match='failed to stat CDI host device "/dev/gone"'):
        complete_device_node(DeviceNode("/dev/gone", minor=1), table())


def test_given_file_mode_is_kept() -> None:
    lookup = table(x=HostDevice("c", 5, 9, 0o600))
    assert complete_device_node(DeviceNode("/dev/x", file_mode=0o640), lookup).file_mode == 0o640


def test_real_lstat_of_dev_null_and_of_a_symlink(tmp_path: Any) -> None:
    null = lstat_device("/dev/null")
    assert (null.type, null.major, null.minor) == ("c", 1, 3)
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    with pytest.raises(OSError, match="not a device node"):
        lstat_device(str(link))


# net devices, mounts, hooks, intelRdt, additional gids


def test_net_devices_set_by_host_name_last_wins() -> None:
    spec = bare() | {"linux": {"netDevices": {"eth0": {"name": "old"}}}}
    edits = ContainerEdits(net_devices=(NetDevice("eth0", "net0"), NetDevice("eth1", "net1")))
    later = ContainerEdits(net_devices=(NetDevice("eth1", "net9"),))
    assert inject(spec, edits, later)["linux"]["netDevices"] == {
        "eth0": {"name": "net0"},
        "eth1": {"name": "net9"},
    }


def test_mounts_replace_by_exact_destination_and_sort_stably_by_depth() -> None:
    spec = bare() | {
        "mounts": [
            {"destination": "/dest/path/b", "source": "x"},
            {"destination": "/dest/path/a", "source": "y"},
            {"destination": "/x/", "source": "old-slash"},
            {"destination": "/x", "source": "old"},
        ]
    }
    edits = ContainerEdits(
        mounts=(Mount("/host", "/dest/edit", options=("ro",)), Mount("/new", "/x", type="bind"))
    )
    mounts = inject(spec, edits)["mounts"]
    assert [m["destination"] for m in mounts] == [
        "/x/",
        "/x",
        "/dest/edit",
        "/dest/path/b",
        "/dest/path/a",
    ]
    assert mounts[1] == {"destination": "/x", "type": "bind", "source": "/new"}
    assert mounts[2] == {"destination": "/dest/edit", "source": "/host", "options": ["ro"]}


def test_mount_appended_last_at_equal_depth() -> None:
    spec = bare() | {"mounts": [{"destination": "/dest/path/c"}, {"destination": "/dest/path/b"}]}
    mounts = inject(spec, ContainerEdits(mounts=(Mount("/h", "/dest/path/a"),)))["mounts"]
    assert [m["destination"] for m in mounts] == ["/dest/path/c", "/dest/path/b", "/dest/path/a"]


def test_existing_mounts_are_sorted_too_but_only_with_mount_edits() -> None:
    spec = bare() | {"mounts": [{"destination": "/a/b/c"}, {"destination": "/a"}]}
    assert [m["destination"] for m in inject(spec, ContainerEdits(env=("A=1",)))["mounts"]] == [
        "/a/b/c",
        "/a",
    ]
    sorted_mounts = inject(spec, ContainerEdits(mounts=(Mount("/h", "/z"),)))["mounts"]
    assert [m["destination"] for m in sorted_mounts] == ["/a", "/z", "/a/b/c"]


@pytest.mark.parametrize(
    ("mount", "options"),
    [
        (Mount("/h", "/c", type="bind"), ["idmap"]),
        (Mount("/h", "/c", options=("rbind",)), ["rbind", "ridmap"]),
        (Mount("/h", "/c", options=("bind", "ro")), ["bind", "ro", "idmap"]),
        (Mount("/h", "/c", options=("rbind", "idmap")), ["rbind", "idmap"]),
        (Mount("/h", "/c", type="tmpfs"), None),
    ],
)
def test_bind_mounts_get_an_idmap_option_in_a_user_namespace(
    mount: Mount, options: list[str] | None
) -> None:
    spec = bare() | {"linux": {"namespaces": [{"type": "user"}]}}
    assert inject(spec, ContainerEdits(mounts=(mount,)))["mounts"][0].get("options") == options
    plain = inject(bare(), ContainerEdits(mounts=(mount,)))["mounts"][0].get("options")
    assert plain == (list(mount.options) or None)


def test_hooks_go_to_their_lifecycle_with_timeout() -> None:
    hooks = tuple(
        Hook(
            name,
            f"/bin/{name}",
            args=("a",),
            env=("E=1",),
            timeout=5 if name == "poststop" else None,
        )
        for name in (
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        )
    )
    spec = bare() | {"hooks": {"poststop": [{"path": "/existing"}]}}
    result = inject(spec, ContainerEdits(hooks=hooks))["hooks"]
    assert result["poststop"] == [
        {"path": "/existing"},
        {"path": "/bin/poststop", "args": ["a"], "env": ["E=1"], "timeout": 5},
    ]
    assert result["createContainer"] == [
        {"path": "/bin/createContainer", "args": ["a"], "env": ["E=1"]}
    ]
    assert set(result) == {
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    }


def test_intel_rdt_is_replaced_wholesale_by_the_last() -> None:
    spec = bare() | {"linux": {"intelRdt": {"closID": "old", "l3CacheSchema": "L3:0=f"}}}
    first = ContainerEdits(intel_rdt=IntelRdt(clos_id="a", mem_bw_schema="MB:0=50"))
    last = ContainerEdits(
        intel_rdt=IntelRdt(clos_id="b", schemata=("L3:0=ff",), enable_monitoring=True)
    )
    assert inject(spec, first, last)["linux"]["intelRdt"] == {
        "closID": "b",
        "schemata": ["L3:0=ff"],
        "enableMonitoring": True,
    }


def test_additional_gids_skip_zero_and_deduplicate() -> None:
    spec = bare() | {"process": {"user": {"uid": 0, "gid": 0, "additionalGids": [5]}}}
    result = inject(spec, ContainerEdits(additional_gids=(0, 5, 6, 6, 7)))
    assert result["process"]["user"]["additionalGids"] == [5, 6, 7]
    assert inject(bare(), ContainerEdits(additional_gids=(0,))) == bare()


def test_categories_are_applied_in_the_reference_order(host_dev: HostDeviceTable) -> None:
    edits = ContainerEdits(
        env=("A=1",),
        device_nodes=(DeviceNode("/dev/null"),),
        net_devices=(NetDevice("eth0", "n"),),
        mounts=(Mount("/h", "/c"),),
        hooks=(Hook("poststart", "/h"),),
        intel_rdt=IntelRdt(clos_id="c"),
        additional_gids=(9,),
    )
    result = inject_edits(bare(), [edits], lookup=host_dev)
    assert list(result.spec) == ["ociVersion", "process", "linux", "mounts", "hooks"]
    assert list(result.spec["linux"]) == ["devices", "resources", "netDevices", "intelRdt"]
    assert result.added.to_document()["env"] == ["A=1"]
    assert not result.added.is_empty() and result.replaced.is_empty()


# all or nothing


def test_failed_host_lookup_leaves_the_spec_untouched(host_dev: HostDeviceTable) -> None:
    spec = oci_spec()
    before = copy.deepcopy(spec)
    edits = ContainerEdits(
        env=("A=1",), device_nodes=(DeviceNode("/dev/vfio/14"), DeviceNode("/dev/vfio/99"))
    )
    with pytest.raises(
        CdiInjectionError, match='failed to stat CDI host device "/dev/vfio/99"'
    ) as info:
        inject_edits(spec, [edits], lookup=host_dev)
    assert spec == before
    assert info.value.hint


def test_malformed_oci_specs_are_refused_before_anything() -> None:
    for bad, field in [
        ({"ociVersion": "1"} | {"process": []}, "process"),
        ({"ociVersion": "1"} | {"process": {"env": "A=1"}}, "process.env"),
        ({"ociVersion": "1"} | {"linux": {"devices": [{"type": "c"}]}}, "linux.devices[0].path"),
        ({"ociVersion": "1"} | {"mounts": [{"source": "x"}]}, "mounts[0].destination"),
        ({"ociVersion": "1"} | {"hooks": {"poststop": {}}}, "hooks.poststop"),
        ({"ociVersion": 1}, "ociVersion"),
    ]:
        with pytest.raises(OciSpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
            inject_edits(bad, [ContainerEdits(env=("A=1",))])


def test_nothing_requested_returns_an_equal_copy() -> None:
    spec = oci_spec()
    result = inject_edits(spec, [])
    assert result.spec == spec
    assert result.spec is not spec
    assert result.added.is_empty()


# Linear application: the same result as the reference's list scans, on generated specs.

PATHS = st.sampled_from(["/dev/a", "/dev/b", "/dev/c", "/dev/d/e"])
EXISTING_DEVICES = st.lists(
    st.fixed_dictionaries(
        {"path": st.one_of(PATHS, st.just(7)), "type": st.just("c"), "minor": st.integers(0, 9)}
    ),
    max_size=6,
)
NODES = st.lists(
    st.builds(
        DeviceNode,
        path=PATHS,
        type=st.sampled_from(["c", "b", "p"]),
        major=st.integers(1, 3),
        minor=st.integers(0, 9),
    ),
    max_size=8,
)
EXISTING_MOUNTS = st.lists(
    st.fixed_dictionaries({"destination": st.one_of(PATHS, st.just(None)), "source": PATHS}),
    max_size=6,
)
MOUNTS = st.lists(st.builds(Mount, host_path=PATHS, container_path=PATHS), max_size=6)
GIDS = st.lists(st.integers(0, 4), max_size=6)


def _reference_apply(
    spec: dict[str, Any], nodes: list[DeviceNode], mounts: list[Mount], gids: list[int]
) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """runtime-tools' RemoveDevice + AddDevice, the mount replace and the gid append, with
    their list scans: the oracle."""
    devices = spec.setdefault("linux", {}).setdefault("devices", [])
    replaced_devices: list[Any] = []
    for node in nodes:
        entry = device_entry(node, spec)
        for i, existing in enumerate(devices):
            if existing.get("path") == node.path:
                replaced_devices.append(devices.pop(i))
                break
        for i, existing in enumerate(devices):
            if existing.get("path") == node.path:
                replaced_devices.append(existing)
                devices[i] = entry
                break
        else:
            devices.append(entry)
    current = spec.setdefault("mounts", [])
    replaced_mounts: list[Any] = []
    for mount in mounts:
        for i, existing in enumerate(current):
            if existing.get("destination") == mount.container_path:
                replaced_mounts.append(current.pop(i))
                break
        current.append(mount_entry(mount, user_namespace=False))
    if mounts:
        current[:] = sorted(current, key=lambda m: mount_depth(str(m.get("destination", ""))))
    present = (
        spec.setdefault("process", {}).setdefault("user", {}).setdefault("additionalGids", [3])
    )
    for gid in gids:
        if gid != 0 and gid not in present:
            present.append(gid)
    return devices, replaced_devices, current, replaced_mounts


@settings(max_examples=300, deadline=None)
@given(EXISTING_DEVICES, NODES, EXISTING_MOUNTS, MOUNTS, GIDS)
def test_linear_application_matches_the_reference_scans(
    existing: list[Any],
    nodes: list[DeviceNode],
    existing_mounts: list[Any],
    mounts: list[Mount],
    gids: list[int],
) -> None:
    spec = bare() | {
        "linux": {"devices": copy.deepcopy(existing)},
        "mounts": copy.deepcopy(existing_mounts),
        "process": {"user": {"additionalGids": [3]}},
    }
    oracle = copy.deepcopy(spec)
    devices, replaced_devices, current, replaced_mounts = _reference_apply(
        oracle, nodes, mounts, gids
    )
    edits = ContainerEdits(
        device_nodes=tuple(nodes), mounts=tuple(mounts), additional_gids=tuple(gids)
    )
    added, replaced = apply_edits(spec, edits)
    assert spec["linux"]["devices"] == devices
    assert list(replaced.devices) == replaced_devices
    assert spec["mounts"] == current
    assert list(replaced.mounts) == replaced_mounts
    assert spec["process"]["user"]["additionalGids"] == oracle["process"]["user"]["additionalGids"]
    assert len(added.devices) == len(nodes)
