"""Spec validation and versions, rule by rule as the reference applies them."""

from __future__ import annotations

import pytest

from kata_vfio.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Spec,
    minimum_version,
    parse_spec,
    spec_problems,
    validate_spec,
)
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.cdi.versions import CURRENT_VERSION, KNOWN_VERSIONS, SPEC_VERSIONS, version_problem
from kata_vfio.errors import CdiSpecError

ENV = ContainerEdits(env=("A=1",))


def spec(
    *devices: Device,
    version: str = "1.1.0",
    kind: str = "vendor.com/class",
    edits: ContainerEdits | None = None,
    annotations: dict[str, str] | None = None,
) -> Spec:
    return Spec(
        version=version,
        kind=kind,
        devices=devices or (Device("dev", ENV),),
        container_edits=edits or ContainerEdits(),
        annotations=annotations or {},
    )


def only_problem(s: Spec) -> str:
    problems = spec_problems(s)
    assert len(problems) == 1, problems
    return problems[0]


def test_a_valid_spec_has_no_problems() -> None:
    assert spec_problems(spec()) == ()
    validate_spec(spec())


@pytest.mark.parametrize("version", ["0.3.0", "v0.3.0", "0.8.0", "1.0.0", "v1.1.0"])
def test_known_versions_are_accepted(version: str) -> None:
    assert version_problem(spec(version=version)) is None


@pytest.mark.parametrize("version", ["0.3", "1.2.0", "", "not-a-version", "vv1.0.0", " 1.0.0"])
def test_unknown_versions_are_invalid(version: str) -> None:
    assert version_problem(spec(version=version)) == f"invalid version {go_quote(version)}"


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_pre_release_versions_are_too_old(version: str) -> None:
    assert version_problem(spec(version=version)) == "the spec version must be at least v0.3.0"


def node(**fields: object) -> ContainerEdits:
    return ContainerEdits(device_nodes=(DeviceNode(path="/dev/x", **fields),))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("document", "required"),
    [
        (spec(), "0.3.0"),
        (spec(Device("d", ContainerEdits(mounts=(Mount("/a", "/b", type="bind"),)))), "0.4.0"),
        (spec(edits=ContainerEdits(mounts=(Mount("/a", "/b", type="tmpfs"),))), "0.4.0"),
        (spec(Device("0", ENV)), "0.5.0"),
        (spec(Device("d", node(host_path="/dev/x"))), "0.5.0"),
        (spec(edits=node(host_path="/dev/y")), "0.5.0"),
        (spec(annotations={"a": "b"}), "0.6.0"),
        (spec(Device("d", ENV, annotations={"a": "b"})), "0.6.0"),
        (spec(kind="vendor.com/class.sub"), "0.6.0"),
        (spec(edits=ContainerEdits(intel_rdt=IntelRdt())), "0.7.0"),
        (spec(Device("d", ContainerEdits(additional_gids=(0,)))), "0.7.0"),
        (spec(Device("d", ContainerEdits(intel_rdt=IntelRdt(schemata=())))), "1.1.0"),
        (spec(edits=ContainerEdits(intel_rdt=IntelRdt(enable_monitoring=True))), "1.1.0"),
        (spec(Device("d", ContainerEdits(net_devices=(NetDevice("eth0", "net0"),)))), "1.1.0"),
        (spec(Device("0", ContainerEdits(net_devices=(NetDevice("eth0", "net0"),)))), "1.1.0"),
    ],
)
def test_minimum_version_rules(document: Spec, required: str) -> None:
    assert minimum_version(document) == required
    below = KNOWN_VERSIONS[KNOWN_VERSIONS.index(required) - 1]
    if required != "0.3.0":
        low = Spec(
            below, document.kind, document.devices, document.container_edits, document.annotations
        )
        assert version_problem(low) == f"the spec version must be at least v{required}"
    exact = Spec(
        required, document.kind, document.devices, document.container_edits, document.annotations
    )
    assert version_problem(exact) is None


def test_the_vendor_and_class_of_the_kind_are_checked() -> None:
    assert "invalid vendor. empty name" in only_problem(spec(kind="vendor.comdevice"))
    assert "invalid class" in spec_problems(spec(kind="vendor.com/device="))[0]
    assert "should end with a letter or digit" in only_problem(spec(kind="vendor.com-/device"))
    assert "invalid vendor" in only_problem(spec(kind="1vendor.com/device"))


def test_device_rules() -> None:
    assert "invalid spec, no devices" in spec_problems(Spec("0.3.0", "a.com/b"))[-1]
    assert "devices[0].name: invalid (empty) device name" in spec_problems(spec(Device("", ENV)))[0]
    assert "invalid device, empty device edits" in only_problem(spec(Device("d")))
    problem = only_problem(spec(Device("d", ENV), Device("d", ENV)))
    assert 'devices[1]: invalid spec, multiple device "d"' in problem
    # Spec-level edits may be empty.
    assert spec_problems(spec(edits=ContainerEdits())) == ()


@pytest.mark.parametrize("entry", ["", "=foo", "FOOBAR"])
def test_env_entries_need_a_name_and_equals(entry: str) -> None:
    problem = only_problem(spec(edits=ContainerEdits(env=(entry,))))
    assert problem == f"containerEdits.env[0]: invalid environment variable {go_quote(entry)}"
    hook = Hook("poststop", "/bin/h", env=(entry,))
    assert 'invalid hook "poststop"' in only_problem(spec(edits=ContainerEdits(hooks=(hook,))))


def test_env_values_may_hold_equals() -> None:
    assert spec_problems(spec(edits=ContainerEdits(env=("A=b=c", "B=")))) == ()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"path": ""}, "invalid (empty) device path"),
        ({"type": "x"}, 'invalid type "x"'),
        ({"type": "cb"}, 'invalid type "cb"'),
        ({"permissions": "rwx"}, 'invalid permissions "rwx"'),
        ({"permissions": "read"}, 'invalid permissions "read"'),
    ],
)
def test_device_node_rules(fields: dict[str, str], message: str) -> None:
    path = fields.pop("path", "/dev/x")
    edits = ContainerEdits(device_nodes=(DeviceNode(path=path, **fields),))  # type: ignore[arg-type]
    assert message in only_problem(spec(Device("d", edits)))


@pytest.mark.parametrize("kind", ["", "b", "c", "u", "p"])
@pytest.mark.parametrize("permissions", ["", "r", "rw", "rwm", "mwr", "rwmrw", "none"])
def test_valid_device_nodes(kind: str, permissions: str) -> None:
    edits = ContainerEdits(device_nodes=(DeviceNode("/dev/x", type=kind, permissions=permissions),))
    assert spec_problems(spec(Device("d", edits))) == ()


def test_mount_and_hook_rules() -> None:
    assert "hostPath: invalid mount, empty host path" in only_problem(
        spec(edits=ContainerEdits(mounts=(Mount("", "/b"),)))
    )
    assert "containerPath: invalid mount, empty container path" in only_problem(
        spec(edits=ContainerEdits(mounts=(Mount("/a", ""),)))
    )
    assert 'invalid hook name "prestop"' in only_problem(
        spec(edits=ContainerEdits(hooks=(Hook("prestop", "/x"),)))
    )
    assert 'invalid hook "poststop" with empty path' in only_problem(
        spec(edits=ContainerEdits(hooks=(Hook("poststop", ""),)))
    )
    for name in (
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ):
        assert (
            spec_problems(spec(edits=ContainerEdits(hooks=(Hook(name, "rel/path", timeout=0),))))
            == ()
        )


@pytest.mark.parametrize("clos", [".", "..", "a/b", "a\nb", "x" * 4096])
def test_invalid_clos_ids(clos: str) -> None:
    assert "invalid ClosID" in only_problem(
        spec(edits=ContainerEdits(intel_rdt=IntelRdt(clos_id=clos)))
    )


@pytest.mark.parametrize("clos", ["/", "", "gold", "x" * 4095])
def test_valid_clos_ids(clos: str) -> None:
    assert spec_problems(spec(edits=ContainerEdits(intel_rdt=IntelRdt(clos_id=clos)))) == ()


def test_net_device_rules() -> None:
    def edits(*pairs: tuple[str, str]) -> ContainerEdits:
        return ContainerEdits(net_devices=tuple(NetDevice(h, n) for h, n in pairs))

    assert "empty HostInterfaceName" in only_problem(spec(edits=edits(("", "n"))))
    assert "empty Name" in only_problem(spec(edits=edits(("h", ""))))
    assert 'duplicate HostInterfaceName "h"' in only_problem(
        spec(edits=edits(("h", "a"), ("h", "b")))
    )
    assert 'duplicate Name "a"' in only_problem(spec(edits=edits(("h", "a"), ("g", "a"))))
    # Across devices a repeat is fine (the last one wins at injection).
    both = spec(Device("d1", edits(("h", "a"))), Device("d2", edits(("h", "a"))))
    assert spec_problems(both) == ()


def test_every_problem_is_reported_with_its_file() -> None:
    bad = parse_spec(
        "cdiVersion: 9.9.9\nkind: 1v/c\ndevices:\n"
        "- name: -d\n  containerEdits: {env: [X]}\n- name: e\n",
        source="/etc/cdi/bad.yaml",
    )
    with pytest.raises(CdiSpecError) as info:
        validate_spec(bad, source="/etc/cdi/bad.yaml")
    problems = info.value.problems
    assert len(problems) == 5
    assert all(p.startswith("/etc/cdi/bad.yaml: ") for p in problems)
    assert 'invalid version "9.9.9"' in problems[0]
    assert "(and 4 more problems)" in str(info.value)
    assert str(info.value).startswith("invalid CDI Spec /etc/cdi/bad.yaml: ")


def test_versions_come_from_one_table_oldest_first() -> None:
    assert tuple(SPEC_VERSIONS) == KNOWN_VERSIONS and KNOWN_VERSIONS[-1] == CURRENT_VERSION
    assert [v for v, needs in SPEC_VERSIONS.items() if needs is not None] == [
        "0.4.0",
        "0.5.0",
        "0.6.0",
        "0.7.0",
        "1.1.0",
    ]
    # Each requirement holds for the documents its version's rule names, none for the baseline.
    baseline = spec()
    assert not any(needs(baseline) for needs in SPEC_VERSIONS.values() if needs is not None)
