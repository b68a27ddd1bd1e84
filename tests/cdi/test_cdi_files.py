"""The atomic writer, the bounded reader and the OCI spec helpers."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cdi_support import OCI_DATA, copy_data, requires_data
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio import _atomic, oci
from kata_vfio.errors import HostIOError, OciSpecError


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_sets_the_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.yaml"
    _atomic.atomic_write(str(target), b"one", mode=0o600)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    _atomic.atomic_write(str(target), b"two", mode=0o644)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert leftovers(tmp_path) == []


def test_no_overwrite_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(HostIOError) as info:
        _atomic.atomic_write(str(target), b"new", overwrite=False)
    assert info.value.errno == errno.EEXIST
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    _atomic.atomic_write(str(tmp_path / "g"), b"new", overwrite=False)
    assert (tmp_path / "g").read_bytes() == b"new"


def test_symlinked_targets_are_refused_unless_allowed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"real")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(HostIOError, match="symbolic link"):
        _atomic.atomic_write(str(link), b"new")
    assert real.read_bytes() == b"real" and link.is_symlink()
    _atomic.atomic_write(str(link), b"new", allow_symlink=True)
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert real.read_bytes() == b"real"


def test_a_failure_part_way_leaves_the_target_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_atomic.os, "fsync", broken_fsync)
    with pytest.raises(HostIOError, match="Input/output error") as info:
        _atomic.atomic_write(str(target), b"new")
    assert info.value.errno == errno.EIO
    assert info.value.path == str(target)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_directories_parents_and_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(HostIOError, match="is a directory"):
        _atomic.atomic_write(str(tmp_path), b"x")
    with pytest.raises(HostIOError) as info:
        _atomic.atomic_write(str(tmp_path / "no" / "f"), b"x")
    assert info.value.errno == errno.ENOENT
    _atomic.atomic_write(str(tmp_path / "a" / "b" / "f"), b"x", create_parents=True)
    assert (tmp_path / "a" / "b" / "f").read_bytes() == b"x"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    with pytest.raises(HostIOError):
        _atomic.atomic_write("bad\0path", b"x")


def test_remove_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"x")
    assert _atomic.remove_file(str(target)) is True
    assert _atomic.remove_file(str(target)) is False
    with pytest.raises(HostIOError):
        _atomic.remove_file(str(target), missing_ok=False)


def test_bounded_reader_refuses_fifos_and_big_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(HostIOError, match="not a regular file"):
        _atomic.read_regular_file(str(fifo), limit=100, what="CDI spec")  # must not block
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(HostIOError, match="larger than the 100 bytes") as info:
        _atomic.read_regular_file(str(big), limit=100, what="CDI spec")
    assert info.value.errno == errno.EFBIG
    assert _atomic.read_regular_file(str(big), limit=101, what="x") == b"x" * 101


# OCI spec helpers


@pytest.mark.parametrize(
    "relative",
    [
        "runtime-spec/schema/test/config/good/spec-example.json",
        "runtime-spec/schema/test/config/good/minimal.json",
        "runtime-spec/schema/test/config/good/linux-netdevice.json",
        "kata-misc/agent-ctl-oci_config.json",
        "kata-misc/runtime-rs-image-bundle-config.json",
    ],
)
def test_real_oci_specs_load(tmp_path: Path, relative: str) -> None:
    bundle = tmp_path / "bundle"
    copy_data(requires_data(OCI_DATA / relative), bundle / "config.json")
    path, spec = oci.load_bundle(bundle)
    assert path == str(bundle / "config.json")
    assert isinstance(spec["ociVersion"], str)
    assert oci.dump_oci_spec(spec).endswith(b"\n")
    assert json.loads(oci.dump_oci_spec(spec)) == spec


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[]", "must be a JSON object"),
        ("{", "not valid JSON"),
        ('{"ociVersion": "1", "ociVersion": "2"}', "duplicate key 'ociVersion'"),
        ("{}", "ociVersion is required"),
        ('{"ociVersion": "1", "annotations": {"a": 1}}', "annotations['a'] must be a string"),
        (
            '{"ociVersion": "1", "process": {"user": {"uid": "0"}}}',
            "process.user.uid must be an integer",
        ),
        (
            '{"ociVersion": "1", "process": {"user": {"additionalGids": [true]}}}',
            "additionalGids[0]",
        ),
        (
            '{"ociVersion": "1", "linux": {"resources": {"devices": {}}}}',
            "linux.resources.devices must be a list",
        ),
        ('{"ociVersion": "1", "linux": {"netDevices": []}}', "linux.netDevices must be an object"),
        (
            '{"ociVersion": "1", "linux": {"namespaces": ["user"]}}',
            "linux.namespaces[0] must be an object",
        ),
    ],
)
def test_malformed_oci_specs_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(OciSpecError) as info:
        oci.parse_oci_spec(text, source="/run/bundle/config.json")
    assert problem in str(info.value)
    assert "/run/bundle/config.json" in str(info.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("NaN", "linux.resources.cpu.quota: 'NaN' is not a JSON number"),
        ("Infinity", "'Infinity' is not a JSON number"),
        ("-Infinity", "'-Infinity' is not a JSON number"),
        ("1e999", "'1e999' is too large for a float"),
        ("18446744073709551616", "does not fit in 64 bits"),
        ("-9223372036854775809", "does not fit in 64 bits"),
        ("9" * 5000, "... (5000 characters) is an integer that does not fit in 64 bits"),
    ],
)
def test_numbers_json_does_not_have_are_refused_where_they_are(value: str, problem: str) -> None:
    text = f'{{"ociVersion": "1.2.0", "linux": {{"resources": {{"cpu": {{"quota": {value}}}}}}}}}'
    with pytest.raises(OciSpecError) as info:
        oci.parse_oci_spec(text, source="config.json")
    assert problem in str(info.value)
    assert "linux.resources.cpu.quota" in str(info.value)
    assert len(str(info.value)) < 300


def test_64_bit_integers_pass_through() -> None:
    text = '{"ociVersion": "1.2.0", "x": [18446744073709551615, -9223372036854775808, 0.5]}'
    assert oci.parse_oci_spec(text)["x"] == [2**64 - 1, -(2**63), 0.5]


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.one_of(
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(max_size=4),
            st.booleans(),
            st.none(),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_strict_json_gives_plain_values_or_says_where(document: Any) -> None:
    from kata_vfio._json import JsonValueError, strict_loads

    text = json.dumps(document)  # writes NaN and Infinity, which JSON does not have
    try:
        loaded = strict_loads(text)
    except JsonValueError as exc:
        assert ": " in str(exc)
        return
    assert json.dumps(loaded, allow_nan=False)  # finite numbers only
    assert loaded == document


def test_nulls_are_absent_fields() -> None:
    spec = oci.parse_oci_spec(
        '{"ociVersion": "1", "process": null, "linux": {"devices": null}, "annotations": null}'
    )
    assert oci.annotations(spec) == {}
    assert oci.linux_devices(spec) == []


def test_annotation_helpers_copy() -> None:
    spec: dict[str, Any] = {
        "ociVersion": "1",
        "annotations": {"a": "1"},
        "linux": {"devices": [{"path": "/dev/x"}]},
    }
    found = oci.annotations(spec)
    found["b"] = "2"
    assert spec["annotations"] == {"a": "1"}
    new = oci.with_annotations(spec, {"c": "3"})
    assert new["annotations"] == {"c": "3"} and spec["annotations"] == {"a": "1"}
    assert "annotations" not in oci.with_annotations(spec, {})
    devices = oci.linux_devices(spec)
    devices[0]["path"] = "/dev/y"
    assert spec["linux"]["devices"] == [{"path": "/dev/x"}]


def test_write_keeps_the_mode_and_checks_first(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"ociVersion": "1"}')
    os.chmod(path, 0o640)
    oci.write_oci_spec(path, {"ociVersion": "1.2.0", "annotations": {"x": "y"}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert oci.load_oci_spec(path)["annotations"] == {"x": "y"}
    with pytest.raises(OciSpecError):
        oci.write_oci_spec(path, {"annotations": {}})
    assert oci.load_oci_spec(path)["ociVersion"] == "1.2.0"
    fresh = tmp_path / "new.json"
    oci.write_oci_spec(fresh, {"ociVersion": "1"})
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    with pytest.raises(HostIOError):
        oci.load_oci_spec(tmp_path / "missing.json")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_write_as_root_keeps_the_owner(tmp_path: Path) -> None:
    # A rootless bundle's config.json must stay its user's after root rewrites it.
    path = tmp_path / "config.json"
    path.write_text('{"ociVersion": "1"}')
    os.chown(path, 1234, 5678)
    os.chmod(path, 0o644)
    oci.write_oci_spec(path, {"ociVersion": "1.2.0"})
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o644)
    assert oci.load_oci_spec(path)["ociVersion"] == "1.2.0"
