"""The registry: directories and priorities, conflicts, errors per file, refresh, writing."""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cdi_support import CDI_DATA, HOST_NODES, copy_data, oci_spec, pgpu_spec_text, requires_data

import kata_vfio.cdi.registry as registry_module
from kata_vfio.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    HostDeviceTable,
    Registry,
    Spec,
    load_spec,
    spec_file_name_for,
    transient_spec_file_name,
    transient_spec_file_name_for,
)
from kata_vfio.errors import (
    CdiError,
    CdiInjectionError,
    CdiSpecError,
    HostIOError,
    InvalidInputError,
)

Write = Callable[[Path, str], Path]


def env_spec(kind: str, **devices: str) -> str:
    body = "".join(
        f"- name: {name}\n  containerEdits:\n    env: [{value}]\n"
        for name, value in devices.items()
    )
    return f"cdiVersion: 0.3.0\nkind: {kind}\ndevices:\n{body}"


def test_default_directories() -> None:
    assert Registry().spec_dirs == ("/etc/cdi", "/var/run/cdi")
    assert Registry(["/a//b/", "c/../d"]).spec_dirs == ("/a/b", "d")
    with pytest.raises(InvalidInputError):
        Registry([""])


def test_later_directories_win(spec_dirs: list[Path], write_file: Write) -> None:
    low, high = spec_dirs
    write_file(low / "a.yaml", env_spec("v.com/c", x="WHO=low", only_low="A=1"))
    write_file(high / "b.yaml", env_spec("v.com/c", x="WHO=high"))
    registry = Registry(spec_dirs)
    found = registry.get_device("v.com/c=x")
    assert found is not None
    assert (found.path, found.priority) == (str(high / "b.yaml"), 1)
    assert found.device.container_edits.env == ("WHO=high",)
    assert registry.device_names() == ("v.com/c=only_low", "v.com/c=x")
    assert registry.errors == {}


def test_same_directory_conflict_drops_the_device_and_reports_both_files(
    spec_dirs: list[Path], write_file: Write
) -> None:
    low, high = spec_dirs
    a = write_file(low / "a.yaml", env_spec("v.com/c", x="A=1", a_only="A=1"))
    b = write_file(low / "b.yaml", env_spec("v.com/c", x="B=1", b_only="B=1"))
    # A higher-priority definition does not rescue a conflicting name (the reference's veto).
    write_file(high / "c.yaml", env_spec("v.com/c", x="C=1"))
    registry = Registry(spec_dirs)
    assert registry.device_names() == ("v.com/c=a_only", "v.com/c=b_only")
    message = f'conflicting device "v.com/c=x" (specs "{b}", "{a}")'
    assert registry.errors == {str(a): (message,), str(b): (message,)}
    assert registry.list_vendors() == ("v.com",)
    assert len(registry.list_specs("v.com")) == 3


def test_only_json_and_yaml_files_are_read_and_yml_is_explained(
    spec_dirs: list[Path], write_file: Write
) -> None:
    d = spec_dirs[0]
    write_file(d / "a.yml", env_spec("v.com/c", yml="A=1"))
    write_file(d / "b.YAML", env_spec("v.com/c", upper="A=1"))
    write_file(d / "c.json", env_spec("v.com/c", yaml_in_json="A=1"))
    write_file(d / "spec.123.tmp", "half written")
    write_file(d / "README", "not a spec")
    write_file(d / "sub" / "d.yaml", env_spec("v.com/c", nested="A=1"))
    (d / "dir.yaml").mkdir()
    registry = Registry([d])
    assert registry.device_names() == ("v.com/c=yaml_in_json",)
    assert set(registry.ignored) == {str(d / "a.yml"), str(d / "b.YAML")}
    assert ".yml" in registry.ignored[str(d / "a.yml")]
    assert registry.errors == {}


def test_one_bad_file_or_directory_hides_nothing_else(
    tmp_path: Path, spec_dirs: list[Path], write_file: Write
) -> None:
    low, high = spec_dirs
    write_file(low / "0-empty.yaml", "")
    write_file(low / "1-bad.yaml", "cdiVersion: 0.3.0\nkind: v.com/c\ndevices: []\n")
    write_file(low / "2-good.yaml", env_spec("v.com/c", good="A=1"))
    not_a_dir = write_file(tmp_path / "not-a-dir", "x")
    (low / "dangling.yaml").symlink_to(tmp_path / "nowhere")
    registry = Registry([low, not_a_dir, tmp_path / "missing", high])
    write_file(high / "3-high.yaml", env_spec("v.com/c", high="A=1"))
    assert registry.device_names() == ("v.com/c=good", "v.com/c=high")
    errors = registry.errors
    assert "no Spec data" in errors[str(low / "0-empty.yaml")][0]
    assert "invalid spec, no devices" in errors[str(low / "1-bad.yaml")][0]
    assert "cannot read CDI spec" in errors[str(low / "dangling.yaml")][0]
    assert "its specs are not loaded" in registry.dir_errors[str(not_a_dir)]
    assert str(tmp_path / "missing") not in errors  # a missing directory is fine


def test_unreadable_directory_does_not_stop_the_scan(
    spec_dirs: list[Path], write_file: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    low, high = spec_dirs
    write_file(low / "a.yaml", env_spec("v.com/c", low="A=1"))
    write_file(high / "b.yaml", env_spec("v.com/c", high="A=1"))
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        # As root, mode 000 does not stop reading; fail the way a non-root reader would.
        if str(path) == str(low):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(registry_module.os, "scandir", scandir)
    registry = Registry(spec_dirs)
    assert registry.device_names() == ("v.com/c=high",)
    assert "Permission denied" in registry.errors[str(low)][0]


def test_refresh_notices_changes_without_reparsing_unchanged_files(
    spec_dirs: list[Path], write_file: Write, monkeypatch: pytest.MonkeyPatch, trust_now: None
) -> None:
    d = spec_dirs[1]
    for i in range(5):
        write_file(d / f"s{i}.yaml", env_spec(f"v{i}.com/c", dev="A=1"))
    parsed: list[str] = []
    real_parse = registry_module.parse_spec

    def counting_parse(data: bytes, *, source: str) -> Spec:
        parsed.append(source)
        return real_parse(data, source=source)

    monkeypatch.setattr(registry_module, "parse_spec", counting_parse)
    registry = Registry(spec_dirs)
    first = registry.refresh()
    assert len(first.added) == 5 and first.unchanged == 0 and len(parsed) == 5
    parsed.clear()
    second = registry.refresh()
    assert (second.added, second.changed, second.removed, second.unchanged) == ((), (), (), 5)
    assert parsed == []
    write_file(d / "s1.yaml", env_spec("v1.com/c", dev="A=2", more="B=1"))
    (d / "s2.yaml").unlink()
    write_file(d / "s9.yaml", env_spec("v9.com/c", dev="A=1"))
    third = registry.refresh()
    assert third.changed == (str(d / "s1.yaml"),)
    assert third.removed == (str(d / "s2.yaml"),)
    assert third.added == (str(d / "s9.yaml"),)
    assert third.unchanged == 3
    assert sorted(parsed) == [str(d / "s1.yaml"), str(d / "s9.yaml")]
    assert "v1.com/c=more" in registry.device_names()
    assert "v2.com/c=dev" not in registry.device_names()


def test_recently_written_files_are_not_trusted() -> None:
    state = registry_module._FileState((1, 2, 3, 10**18, 10**18), 10**18 + 10**9, None, ())
    assert not registry_module._trusted(state)
    old = registry_module._FileState((1, 2, 3, 10**18, 10**18), 10**18 + 3 * 10**9, None, ())
    assert registry_module._trusted(old)


def test_bad_files_keep_their_errors_across_refreshes(
    spec_dirs: list[Path], write_file: Write, trust_now: None
) -> None:
    bad = write_file(spec_dirs[0] / "bad.yaml", "kind: [")
    registry = Registry(spec_dirs)
    assert str(bad) in registry.refresh().errors
    report = registry.refresh()
    assert str(bad) in report.errors and not report.ok


def test_devices_are_listed_in_natural_order(spec_dirs: list[Path], write_file: Write) -> None:
    write_file(spec_dirs[0] / "p.yaml", pgpu_spec_text(10, 2, 33, 1))
    assert Registry(spec_dirs).device_names() == tuple(
        f"nvidia.com/pgpu={g}" for g in (1, 2, 10, 33)
    )


def test_long_digit_runs_in_names_sort_by_value(spec_dirs: list[Path], write_file: Write) -> None:
    huge = "9" * 5000  # int() refuses more than 4,300 digits: the order must not need it
    names = [f"gpu{huge}", "gpu10", f"gpu0{huge}", "gpu2", f"gpu{huge[:-1]}8", "gpu"]
    body = "".join(f"- name: {n}\n  containerEdits:\n    env: [A=1]\n" for n in names)
    write_file(spec_dirs[0] / "p.yaml", f"cdiVersion: 0.6.0\nkind: v.com/c\ndevices:\n{body}")
    registry = Registry(spec_dirs)
    assert registry.errors == {}
    expected = ["gpu", "gpu2", "gpu10", f"gpu{huge[:-1]}8", f"gpu0{huge}", f"gpu{huge}"]
    assert registry.device_names() == tuple(f"v.com/c={n}" for n in expected)


def test_a_spec_with_a_huge_number_is_one_error_not_a_dead_registry(
    spec_dirs: list[Path], write_file: Write
) -> None:
    write_file(spec_dirs[0] / "a.yaml", env_spec("v.com/c", good="A=1"))
    bad = write_file(
        spec_dirs[0] / "b.yaml",
        "cdiVersion: 0.3.0\nkind: v.com/d\ndevices:\n- name: x\n  containerEdits:\n"
        f"    additionalGids: [{'1' * 5000}]\n",
    )
    registry = Registry(spec_dirs)
    assert registry.device_names() == ("v.com/c=good",)
    (message,) = registry.errors[str(bad)]
    assert "additionalGids[0]: expected an integer (uint32)" in message
    assert "(5000 characters)" in message and len(message) < 300


def test_real_files_in_a_registry(tmp_path: Path) -> None:
    d = tmp_path / "cdi"
    for relative in (
        "nvidia-container-toolkit/nvcdi-vfio-mode-pgpu-iommu-group.yaml",
        "nvidia-container-toolkit/nvidia-ctk-generate-default.yaml",
        "nvidia-cloud-native-docs/nvidia.com-pgpu.yaml",
    ):
        copy_data(requires_data(CDI_DATA / relative), d / Path(relative).name)
    registry = Registry([d])
    assert registry.device_names() == (
        "example.com/device=0",
        "example.com/device=all",
        "nvidia.com/pgpu=0",
    )
    assert list(registry.errors) == [str(d / "nvidia.com-pgpu.yaml")]


# injection through the registry


def pgpu_registry(spec_dirs: list[Path], write_file: Write, lookup: HostDeviceTable) -> Registry:
    write_file(spec_dirs[1] / "nvidia.com-pgpu.yaml", pgpu_spec_text(14, 22))
    return Registry(spec_dirs, device_lookup=lookup)


def test_inject_in_request_order_with_spec_edits_once(
    spec_dirs: list[Path], write_file: Write, host_dev: HostDeviceTable
) -> None:
    registry = pgpu_registry(spec_dirs, write_file, host_dev)
    spec = oci_spec()
    result = registry.inject(spec, ["nvidia.com/pgpu=22", "nvidia.com/pgpu=14"])
    assert [d["path"] for d in result.spec["linux"]["devices"]] == [
        "/dev/vfio/vfio",
        "/dev/vfio/22",
        "/dev/vfio/14",
    ]
    assert result.devices == ("nvidia.com/pgpu=22", "nvidia.com/pgpu=14")
    assert spec == oci_spec()  # the input is untouched


def test_unresolvable_names_are_all_listed_and_nothing_changes(
    spec_dirs: list[Path], write_file: Write, host_dev: HostDeviceTable
) -> None:
    registry = pgpu_registry(spec_dirs, write_file, host_dev)
    spec = oci_spec()
    before = copy.deepcopy(spec)
    names = ["nvidia.com/pgpu=14", "nvidia.com/pgpu=vfio1", "bad name", "nvidia.com/pgpu=vfio1"]
    with pytest.raises(CdiInjectionError) as info:
        registry.inject(spec, names)
    # The reference's list: request order, a name requested twice listed twice.
    assert str(info.value) == (
        "unresolvable CDI devices nvidia.com/pgpu=vfio1, bad name, nvidia.com/pgpu=vfio1"
    )
    assert info.value.unresolved == ("nvidia.com/pgpu=vfio1", "bad name", "nvidia.com/pgpu=vfio1")
    assert spec == before
    assert host_dev.lookups == []


def test_injection_never_changes_the_registrys_specs(
    spec_dirs: list[Path], write_file: Write, host_dev: HostDeviceTable
) -> None:
    registry = pgpu_registry(spec_dirs, write_file, host_dev)
    before = registry.get_device("nvidia.com/pgpu=14")
    assert before is not None
    snapshot = copy.deepcopy(before.source.spec)
    registry.inject(oci_spec(), ["nvidia.com/pgpu=14"])
    moved = HostDeviceTable({**HOST_NODES, "/dev/vfio/14": HOST_NODES["/dev/vfio/22"]})
    again = registry.inject(oci_spec(), ["nvidia.com/pgpu=14"], device_lookup=moved)
    assert again.spec["linux"]["devices"][1]["minor"] == 5  # asked the host again
    assert before.source.spec == snapshot
    assert before.device.container_edits.device_nodes == (DeviceNode("/dev/vfio/14"),)


def test_failing_lookup_during_registry_injection(spec_dirs: list[Path], write_file: Write) -> None:
    registry = pgpu_registry(
        spec_dirs, write_file, HostDeviceTable({"/dev/vfio/vfio": HOST_NODES["/dev/vfio/vfio"]})
    )
    spec = oci_spec()
    with pytest.raises(CdiInjectionError, match="/dev/vfio/14"):
        registry.inject(spec, ["nvidia.com/pgpu=14"])
    assert spec == oci_spec()


# writing and removing specs


def a_spec(kind: str = "vendor.com/gpu") -> Spec:
    return Spec(
        "0.5.0", kind, (Device("0", ContainerEdits(device_nodes=(DeviceNode("/dev/vfio/14"),))),)
    )


def test_write_spec_to_the_highest_priority_directory(
    spec_dirs: list[Path], tmp_path: Path
) -> None:
    target = tmp_path / "new" / "run-cdi"
    registry = Registry([spec_dirs[0], target])
    path = registry.write_spec(a_spec())
    assert path == str(target / "vendor.com-gpu.yaml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert Path(path).read_text().startswith("---\n")
    assert load_spec(path) == a_spec()
    registry.refresh()
    assert registry.device_names() == ("vendor.com/gpu=0",)
    json_path = registry.write_spec(a_spec("vendor.com/other"), "custom.json")
    assert Path(json_path).read_text().startswith("{")
    assert load_spec(json_path).kind == "vendor.com/other"
    assert [p.name for p in target.iterdir() if p.name.endswith(".tmp")] == []


def test_write_spec_validates_first_and_writes_nothing_when_invalid(spec_dirs: list[Path]) -> None:
    registry = Registry(spec_dirs)
    bad = Spec("0.3.0", "vendor.com/gpu", a_spec().devices)  # "0" needs 0.5.0
    with pytest.raises(CdiSpecError, match=r"at least v0\.5\.0"):
        registry.write_spec(bad)
    assert list(spec_dirs[1].iterdir()) == []


def test_write_spec_refuses_bad_names_existing_files_and_symlinks(
    spec_dirs: list[Path], tmp_path: Path
) -> None:
    registry = Registry(spec_dirs)
    for name in ("", ".", "..", "../x", "a/b", "x\0"):
        with pytest.raises(InvalidInputError):
            registry.write_spec(a_spec(), name)
    registry.write_spec(a_spec(), "same")
    with pytest.raises(HostIOError, match="File exists"):
        registry.write_spec(a_spec(), "same", overwrite=False)
    (spec_dirs[1] / "link.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    with pytest.raises(HostIOError, match="symbolic link"):
        registry.write_spec(a_spec(), "link")
    assert not (tmp_path / "elsewhere.yaml").exists()
    with pytest.raises(CdiError, match="no CDI spec directories"):
        Registry([]).write_spec(a_spec())


def test_remove_spec(spec_dirs: list[Path]) -> None:
    registry = Registry(spec_dirs)
    registry.write_spec(a_spec())
    assert registry.remove_spec("vendor.com-gpu") is True
    assert registry.remove_spec("vendor.com-gpu.yaml") is False


def test_spec_file_names() -> None:
    assert spec_file_name_for(a_spec()) == "vendor.com-gpu"
    assert transient_spec_file_name("v.com", "c", "pod/ctr") == "v.com-c_pod_ctr"
    assert transient_spec_file_name_for(a_spec(), "a/b/c") == "vendor.com-gpu_a_b_c"
    with pytest.raises(CdiSpecError, match="invalid vendor/class"):
        spec_file_name_for(Spec("0.3.0", "novendor"))
