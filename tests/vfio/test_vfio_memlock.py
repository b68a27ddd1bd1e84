"""The memlock diagnosis: the size parser, libvirt's rule, and the verdict."""

from __future__ import annotations

import resource

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_vfio._echo import echo
from kata_vfio.errors import InvalidInputError
from kata_vfio.host import memlock
from kata_vfio.host.memlock import MemlockLimit

GIB = 1 << 30
SHIFTS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}


@given(
    number=st.integers(min_value=0, max_value=8191),  # 8191P is the largest size
    unit=st.sampled_from(sorted(SHIFTS)),
    suffix=st.sampled_from(["", "B", "iB"]),
    lower=st.booleans(),
)
def test_sizes_parse_with_binary_units(number: int, unit: str, suffix: str, lower: bool) -> None:
    if not unit and suffix == "iB":
        suffix = "B"
    text = f"{number}{unit}{suffix}"
    assert memlock.parse_size(text.lower() if lower else text) == number << SHIFTS[unit]


@given(st.text(max_size=12) | st.text(min_size=60, max_size=300) | st.from_regex(r"[0-9]{70,200}"))
def test_any_text_parses_or_fails_with_our_error(text: str) -> None:
    try:
        size = memlock.parse_size(text)
    except InvalidInputError as exc:
        # The input is echoed as kata_vfio._echo quotes outside input: whole when short, its
        # head and its length when long (never megabytes of it).
        message = str(exc)
        assert echo(text) in message
        assert repr(text) in message or f"... ({len(text)} characters)" in message
        assert exc.hint is not None
    else:
        assert size >= 0


@pytest.mark.parametrize("bad", ["", "16X", "-1G", "1.5G", "G", "16 G B", "0x10", "\u0663G"])
def test_malformed_sizes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="memory size"):
        memlock.parse_size(bad)


def test_libvirt_rule_per_container() -> None:
    vm = 16 * GIB
    assert memlock.required_memlock(vm) == vm + GIB
    assert memlock.required_memlock(vm, devices=4) == vm + GIB, "one shared container"
    assert memlock.required_memlock(vm, devices=4, viommu=True) == 4 * vm + GIB
    assert memlock.required_memlock(vm, devices=4, viommu=True, iommufd=True) == vm + GIB
    assert memlock.required_memlock(vm, bar_bytes=64 * GIB) == vm + GIB + 64 * GIB
    assert memlock.required_memlock(vm, devices=0) == 0
    with pytest.raises(InvalidInputError):
        memlock.required_memlock(-1)


def test_verdicts() -> None:
    vm = 8 * GIB
    low = MemlockLimit(64 << 20, 64 << 20)
    refused = memlock.diagnose(vm, limit=low, cap_ipc_lock=False)
    assert not refused.ok
    assert refused.hint is not None and str(vm + GIB) in refused.hint
    assert "hard limit too" in refused.hint
    assert refused.detail == "needs 9 GiB; RLIMIT_MEMLOCK is 64 MiB"
    soft_only = memlock.diagnose(vm, limit=MemlockLimit(64 << 20, None), cap_ipc_lock=False)
    assert soft_only.hint is not None and "hard limit" not in soft_only.hint
    assert soft_only.detail.endswith("(hard unlimited)")
    assert memlock.diagnose(vm, limit=MemlockLimit(None, None), cap_ipc_lock=False).ok
    capable = memlock.diagnose(vm, limit=low, cap_ipc_lock=True)
    assert capable.ok and "CAP_IPC_LOCK" in capable.detail
    # iommufd accounts against the user's limit even then.
    assert not memlock.diagnose(vm, limit=low, cap_ipc_lock=True, iommufd=True).ok
    assert refused.to_dict()["needed"] == vm + GIB


def test_reads_this_process() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = memlock.current_limit()
    assert limit.soft == (None if soft == resource.RLIM_INFINITY else soft)
    assert limit.hard == (None if hard == resource.RLIM_INFINITY else hard)
    assert isinstance(memlock.has_cap_ipc_lock(), bool)
    assert memlock.has_cap_ipc_lock("/nonexistent") is False


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "unlimited"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (17 * GIB, "17 GiB"),
        (1 << 40, "1 TiB"),
    ],
)
def test_sizes_print_readably(size: int | None, text: str) -> None:
    assert memlock.format_size(size) == text


@pytest.mark.parametrize("text", ["16G", "16384M", "17179869184", "16GiB", "16gb", " 16 G "])
def test_one_size_convention(text: str) -> None:
    assert memlock.parse_size(text) == 16 * GIB


@given(st.integers(4_250, 6_000), st.sampled_from(["", "K", "P", "GiB"]))
def test_huge_digit_runs_are_refused_before_conversion(digits: int, unit: str) -> None:
    with pytest.raises(InvalidInputError, match="too large") as info:
        memlock.parse_size("9" * digits + unit)
    assert "characters)" in str(info.value), "the input is echoed cut short"
    assert info.value.hint is not None and "16384M" in info.value.hint


def test_sizes_have_an_upper_bound_and_an_optional_minimum() -> None:
    assert memlock.parse_size("8191P") == 8191 << 50
    with pytest.raises(InvalidInputError, match="too large"):
        memlock.parse_size("8192P")
    with pytest.raises(InvalidInputError, match="less than 1 MiB") as info:
        memlock.parse_size("4096", what="--vm-memory", minimum=memlock.MIN_VM_MEMORY)
    assert "a bare number is bytes" in (info.value.hint or "")
    assert memlock.parse_size("4096M", minimum=memlock.MIN_VM_MEMORY) == 4096 << 20
