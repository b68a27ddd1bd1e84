"""Kernel uevents: the Rust parser (property tests) and the netlink monitor's handle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_vfio._core import UeventMonitor, parse_uevent
from kata_vfio.errors import HostIOError

_token = st.text(st.characters(codec="utf-8", exclude_characters="\0=@"), min_size=1, max_size=12)
_value = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)


def _datagram(action: str, devpath: str, extra: list[tuple[str, str]]) -> bytes:
    fields = [f"{action}@{devpath}", f"ACTION={action}", f"DEVPATH={devpath}"]
    fields += [f"{k}={v}" for k, v in extra]
    return b"".join(f.encode() + b"\0" for f in fields)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_give_none(data: bytes) -> None:
    event = parse_uevent(data)
    if event is not None:
        assert event.devpath.startswith("/")
        assert event.env["ACTION"] == event.action
        assert event.env["DEVPATH"] == event.devpath


@given(
    _token,
    _token.map(lambda t: "/devices/" + t),
    st.lists(st.tuples(_token.filter(lambda k: k not in ("ACTION", "DEVPATH", "SEQNUM")), _value),
             max_size=6, unique_by=lambda kv: kv[0]),
    st.none() | st.integers(0, 2**64 - 1),
)  # fmt: skip
def test_kernel_events_round_trip(
    action: str, devpath: str, extra: list[tuple[str, str]], seqnum: int | None
) -> None:
    fields = list(extra) + ([] if seqnum is None else [("SEQNUM", str(seqnum))])
    event = parse_uevent(_datagram(action, devpath, fields))
    assert event is not None
    assert (event.action, event.devpath, event.seqnum) == (action, devpath, seqnum)
    for key, value in extra:
        assert event.get(key) == value
    assert event.subsystem == dict(extra).get("SUBSYSTEM")


def test_a_real_bind_event() -> None:
    data = _datagram(
        "unbind",
        "/devices/pci0000:00/0000:00:02.0/0000:01:00.0",
        [("SUBSYSTEM", "pci"), ("PCI_SLOT_NAME", "0000:01:00.0"), ("SEQNUM", "77")],
    )
    event = parse_uevent(data)
    assert event is not None
    assert (event.action, event.subsystem, event.seqnum) == ("unbind", "pci", 77)
    assert event.get("PCI_SLOT_NAME") == "0000:01:00.0"
    assert parse_uevent(b"libudev\0" + data) is None


def test_monitor_handle() -> None:
    try:
        monitor = UeventMonitor.open(["pci"])
    except HostIOError as exc:  # a sandbox without AF_NETLINK
        assert exc.errno is not None
        assert exc.hint and "hostNetwork" in exc.hint
        pytest.skip(f"no netlink here: {exc}")
    with monitor:
        assert monitor.fileno() >= 0
        batch = monitor.receive(0.01)
        assert all(e.subsystem == "pci" for e in batch.events)
        with pytest.raises(ValueError, match="non-negative"):
            monitor.receive(-1)
    assert monitor.closed
    monitor.close()
    with pytest.raises(ValueError, match="closed uevent monitor"):
        monitor.receive(0)
