"""The DRA checkpoint: records survive a round trip, any damaged file is set aside (never a
crash, never half-read), another boot's records are dropped, the file is private."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio.errors import HostIOError
from kata_vfio.k8s.dra.checkpoint import Checkpoint, ClaimRecord, PreparedUnit, read_boot_id
from kata_vfio.k8s.dra.ports import ClaimRef

BOOT = "b0b0b0b0-0000-4000-8000-000000000000"
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
bdfs = st.builds(
    "{:04x}:{:02x}:{:02x}.{}".format,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0x1F),
    st.integers(0, 7),
)
units = st.builds(
    PreparedUnit,
    device=names,
    requests=st.lists(names, min_size=1, max_size=3).map(tuple),
    unit_id=names,
    group=st.integers(0, 4096),
    bdfs=st.lists(bdfs, min_size=1, max_size=4).map(tuple),
    cdi_id=st.one_of(st.just(""), names),
)
records = st.builds(
    ClaimRecord,
    claim=st.builds(ClaimRef, names, names, st.uuids().map(str)),
    state=st.sampled_from(["preparing", "prepared", "unpreparing"]),
    units=st.lists(units, max_size=3).map(tuple),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(records, max_size=4, unique_by=lambda r: r.claim.uid))
def test_records_survive_a_round_trip(items: list[ClaimRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state")
        checkpoint = Checkpoint(state, BOOT)
        assert checkpoint.load() is None
        for record in items:
            checkpoint.put(record)
        again = Checkpoint(state, BOOT)
        assert again.load() is None
        assert sorted(again, key=lambda r: r.claim.uid) == sorted(items, key=lambda r: r.claim.uid)
        path = Path(state) / "checkpoint.json"
        assert not items or stat.S_IMODE(path.stat().st_mode) == 0o600


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        documents.map(lambda d: json.dumps(d).encode()),
        documents.map(
            lambda d: json.dumps(
                {"kind": "kata-vfio/dra-checkpoint", "version": 1, "bootID": BOOT, "claims": d}
            ).encode()
        ),
    )
)
def test_a_damaged_file_is_set_aside_and_nothing_is_read(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir(mode=0o700)
        (state / "checkpoint.json").write_bytes(data)
        checkpoint = Checkpoint(str(state), BOOT)
        dropped = checkpoint.load()
        if dropped is None:  # the rare valid document: every record was read whole
            assert all(isinstance(r, ClaimRecord) for r in checkpoint)
        else:
            assert "is damaged" in dropped and len(checkpoint) == 0
            assert (state / "checkpoint.json.damaged").read_bytes() == data


def test_another_boot_drops_the_records(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    checkpoint = Checkpoint(state, BOOT)
    checkpoint.load()
    checkpoint.put(ClaimRecord(ClaimRef("ns", "c", "u-1"), "prepared", ()))
    later = Checkpoint(state, "another-boot")
    dropped = later.load()
    assert dropped is not None and f"boot {BOOT}" in dropped and len(later) == 0
    assert json.loads((tmp_path / "state/checkpoint.json").read_text())["claims"] == []


def test_a_link_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (tmp_path / "elsewhere").write_text("{}")
    (state / "checkpoint.json").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HostIOError, match="is a symbolic link"):
        Checkpoint(str(state), BOOT).load()


def test_the_boot_id_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "sys/kernel/random/boot_id"
    path.parent.mkdir(parents=True)
    path.write_text(BOOT + "\n")
    assert read_boot_id(str(tmp_path)) == BOOT
    path.write_text("../../x\n")
    with pytest.raises(HostIOError, match="does not hold a boot ID"):
        read_boot_id(str(tmp_path))
    path.unlink()
    with pytest.raises(HostIOError):
        read_boot_id(str(tmp_path))


@pytest.mark.parametrize(
    ("field", "value"),
    [("uid", "../../etc/cron.d/x"), ("functions", ["0000:05:00.0/../../../x"])],
)
def test_a_record_naming_a_path_outside_is_damage(
    tmp_path: Path, field: str, value: object
) -> None:
    state = tmp_path / "state"
    checkpoint = Checkpoint(str(state), BOOT)
    checkpoint.load()
    unit = PreparedUnit("pci-0000-05-00-0", ("nic",), "0000:05:00.0", 12, ("0000:05:00.0",))
    checkpoint.put(ClaimRecord(ClaimRef("ns", "c", "u-1"), "prepared", (unit,)))
    document = json.loads((state / "checkpoint.json").read_text())
    claim = document["claims"][0]
    if field == "uid":
        claim["uid"] = value
    else:
        claim["units"][0]["functions"] = value
    (state / "checkpoint.json").write_text(json.dumps(document))
    again = Checkpoint(str(state), BOOT)
    dropped = again.load()
    assert dropped is not None and "is damaged" in dropped and len(again) == 0
