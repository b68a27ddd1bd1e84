"""Resource names and PCI selectors (``--resource NAME=SELECTOR``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_vfio.cdi import is_qualified_name
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.resources import (
    DEFAULT_RESOURCE,
    PciSelector,
    default_resources,
    parse_resource,
    parse_resources,
    resource_name_problem,
)


def test_parses_vendor_device_pairs_and_wildcards() -> None:
    spec = parse_resource("nvidia.com/pgpu=10de:2330, 10DE:2331,10de:*")
    assert spec.name == "nvidia.com/pgpu"
    assert spec.selectors == (
        PciSelector(0x10DE, 0x2330),
        PciSelector(0x10DE, 0x2331),
        PciSelector(0x10DE, None),
    )
    assert str(spec) == "nvidia.com/pgpu=10de:2330,10de:2331,10de:*"
    assert spec.env_name == "PCI_RESOURCE_NVIDIA_COM_PGPU"
    assert (
        parse_resource("example.com/my-nic=15b3:101e").env_name == "PCI_RESOURCE_EXAMPLE_COM_MY_NIC"
    )


def test_a_selector_given_twice_counts_once() -> None:
    assert len(parse_resource("a.com/b=10de:*,10de:*").selectors) == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nvidia.com/pgpu", "no '=SELECTOR'"),
        ("nvidia.com/pgpu=", "no '=SELECTOR'"),
        ("pgpu=10de:*", "needs a domain"),
        ("NVIDIA.com/pgpu=10de:*", "lower-case DNS"),
        ("kubernetes.io/gpu=10de:*", "reserved"),
        ("x.kubernetes.io/gpu=10de:*", "reserved"),
        ("nvidia.com/-gpu=10de:*", "1-63"),
        ("nvidia.com/" + "g" * 64 + "=10de:*", "1-63"),
        ("nvidia.com/a/b=10de:*", "1-63"),
        # Valid for Kubernetes, not as a CDI kind: the class must start with a letter.
        ("nvidia.com/3d=10de:*", "CDI kind"),
        ("0vendor.com/gpu=10de:*", "CDI kind"),
        ("nvidia.com/pgpu=10de", "not VENDOR:DEVICE"),
        ("nvidia.com/pgpu=10de:", "not VENDOR:DEVICE"),
        ("nvidia.com/pgpu=*:2330", "not VENDOR:DEVICE"),
        ("nvidia.com/pgpu=10de0:2330", "not VENDOR:DEVICE"),
        ("nvidia.com/pgpu=10de:2330,", "not VENDOR:DEVICE"),
        ("nvidia.com/pgpu=0x10de:2330", "not VENDOR:DEVICE"),
    ],
)
def test_refuses_bad_resources_naming_the_part(text: str, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words) as info:
        parse_resource(text)
    assert info.value.hint


def test_default_and_duplicates() -> None:
    assert parse_resources([]) == default_resources()
    (default,) = default_resources()
    assert default.name == DEFAULT_RESOURCE
    with pytest.raises(InvalidInputError, match="given twice"):
        parse_resources(["a.com/b=10de:*", "a.com/b=15b3:*"])


def test_default_takes_display_controllers_only(sample_scan) -> None:  # type: ignore[no-untyped-def]
    (default,) = default_resources()
    taken = {str(d.bdf) for d in sample_scan.devices if default.matches(d)}
    # GPUs (0x0302), the RTX's VGA function (0x0300); not the NVSwitches (0x0680) nor audio.
    assert "0000:18:00.0" in taken
    assert "0000:a9:00.0" in taken
    assert "0000:40:00.0" not in taken
    assert "0000:a9:00.1" not in taken
    assert all(sample_scan.device(b).class_code >> 16 == 0x03 for b in taken)


@given(st.text(max_size=80))
def test_any_text_parses_or_raises_invalid_input(text: str) -> None:
    try:
        spec = parse_resource(text)
    except InvalidInputError:
        return
    assert resource_name_problem(spec.name) is None
    assert spec.selectors


_label = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
_short = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}[a-z0-9]", fullmatch=True)
_hex = st.integers(0, 0xFFFF)


@given(
    st.lists(_label, min_size=2, max_size=3),
    _short,
    st.lists(st.tuples(_hex, st.none() | _hex), min_size=1, max_size=4),
)
def test_valid_resources_round_trip_and_name_cdi_kinds(
    labels: list[str], short: str, pairs: list[tuple[int, int | None]]
) -> None:
    name = ".".join(labels) + "/" + short
    text = name + "=" + ",".join(f"{v:x}:{'*' if d is None else f'{d:x}'}" for v, d in pairs)
    spec = parse_resource(text)
    assert parse_resource(str(spec)) == spec
    # Every device the kubelet names from this resource is a valid CDI name.
    assert is_qualified_name(f"{spec.name}=0000:18:00.0")
