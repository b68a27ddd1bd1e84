"""Property tests of the attribute parsers, through the scan (the Rust core) and the reference
scanner: whatever text sits in ``resource`` or ``uevent``, the scan returns (no panic, no
exception), both scanners read it the same way, and nothing is more optimistic than the text:
BARs that do not add up are unknown, and a ``uevent`` that is not whole never decides the
driver."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kata_vfio
from kata_vfio.testing import FakeHost, build_host
from oracles import refscan
from oracles.compare import device_view

GPU = "0000:01:00.0"
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
U64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def host() -> Iterator[FakeHost]:
    with tempfile.TemporaryDirectory() as tmp:
        yield build_host(
            Path(tmp) / "h",
            {
                "devices": [
                    {"bdf": GPU, "id": "10de:2330", "class": "030200", "driver": "vfio-pci",
                     "group": 1, "bars": ["16M mem64", None, "64G mem64 pref"]},
                ]
            },
        )  # fmt: skip


def _both(host: FakeHost, *, details: bool = True) -> tuple[kata_vfio.PciDevice, refscan.RefDevice]:
    rust = kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
    ref = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
    (got,) = rust.devices
    (want,) = ref.devices
    assert device_view(got) == device_view(want)
    return got, want


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


_number = st.one_of(
    st.integers(0, U64),
    st.sampled_from((0, 1, 0xFFF, 1 << 32, U64 - 1, U64)),
)
_flags = st.sampled_from((0, 0x200, 0x100, 0x40200, 0x14220C, 0x140204, 0x2000, 0x100000))


@st.composite
def _bar_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(("empty", "bar", "numbers", "garbage")))
    if kind == "empty":
        return " ".join([_hex(0, 16)] * 3)
    if kind == "bar":
        start = draw(st.integers(0, 1 << 48))
        size = draw(st.sampled_from((1 << 12, 1 << 24, 1 << 36)))
        return f"{_hex(start, 16)} {_hex(start + size - 1, 16)} {_hex(draw(_flags), 16)}"
    if kind == "numbers":
        return " ".join(_hex(draw(n), draw(st.sampled_from((1, 16)))) for n in (_number,) * 3)
    return draw(st.text(st.sampled_from("0x123abcdefz -\t"), max_size=40))


@SETTINGS
@given(lines=st.lists(_bar_line(), max_size=17), newline=st.booleans())
def test_any_resource_text_scans_the_same_in_both_and_never_panics(
    host: FakeHost, lines: list[str], newline: bool
) -> None:
    text = "\n".join(lines) + ("\n" if newline and lines else "")
    Path(host.device_path(GPU), "resource").write_text(text)
    got, _ref = _both(host)
    problems = [(p.attribute, p.reason) for p in got.problems]
    if got.bars is None:
        assert problems == [("resource", "invalid")]
        return
    assert problems == []
    assert len(lines) >= 6
    for bar in got.bars:
        assert 0 <= bar.index < 6 and 0 < bar.size <= U64
        start, end, _flags_text = lines[bar.index].split()
        assert (int(start, 16), int(end, 16)) == (bar.start, bar.start + bar.size - 1)


@SETTINGS
@given(data=st.data())
def test_a_uevent_that_is_not_whole_never_decides_the_driver(
    host: FakeHost, data: st.DataObject
) -> None:
    uevent = Path(host.device_path(GPU), "uevent")
    whole = (
        "DRIVER=vfio-pci\nPCI_CLASS=30200\nPCI_ID=10DE:2330\nPCI_SUBSYS_ID=0000:0000\n"
        "PCI_SLOT_NAME=0000:01:00.0\n"
        "MODALIAS=pci:v000010DEd00002330sv00000000sd00000000bc03sc02i00\n"
    )
    cut = data.draw(st.integers(0, len(whole)))
    noise = data.draw(st.sampled_from(("", "DRIVER=\n", "DRIVER=nvidia")))
    text = whole[:cut] + (noise if cut < len(whole) else "")
    uevent.write_text(text)
    got, _ref = _both(host, details=False)  # (the other test leaves resource as it drew it)
    assert got.driver == "vfio-pci"  # the driver link's answer unless the uevent is whole
    assert (got.vendor, got.device, got.class_code) == (0x10DE, 0x2330, 0x030200)
    if text == whole:
        assert got.problems == ()
    elif not text.endswith("\n"):
        assert [p.attribute for p in got.problems] == ["uevent"]
