"""Qualified device names, case by case against the reference parser's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio.cdi import (
    QualifiedName,
    is_qualified_name,
    parse_device,
    parse_qualified_name,
    parse_qualifier,
    qualified_name,
    validate_class_name,
    validate_device_name,
    validate_vendor_name,
)
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.errors import CdiNameError, InvalidInputError

VALID = [
    ("vendor.com/class=dev", ("vendor.com", "class", "dev")),
    ("a/b=c", ("a", "b", "c")),
    ("aa/b=cc", ("aa", "b", "cc")),
    ("a/bb=cc", ("a", "bb", "cc")),
    ("vendor.com/class=0", ("vendor.com", "class", "0")),
    ("vendor1.com/class.subclass=dev1", ("vendor1.com", "class.subclass", "dev1")),
    ("other-vendor1.com/class_1=dev_1", ("other-vendor1.com", "class_1", "dev_1")),
    (
        "yet_another-vendor2.com/c-lass_2=dev_1:2.3",
        ("yet_another-vendor2.com", "c-lass_2", "dev_1:2.3"),
    ),
    ("nvidia.com/pgpu=vfio0", ("nvidia.com", "pgpu", "vfio0")),
    ("nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70", ("nvidia.com", "gpu", "GPU-4cf8db2d-06c0-7d70")),
    ("nvidia.com/gpu=all", ("nvidia.com", "gpu", "all")),
    ("nvidia.com/gpu=0:1", ("nvidia.com", "gpu", "0:1")),
    ("nvidia.com/pgpu=0000:65:00.0", ("nvidia.com", "pgpu", "0000:65:00.0")),
    ("Vendor_.-x/C..z=n", ("Vendor_.-x", "C..z", "n")),  # no DNS rules, as the reference
]

INVALID = [
    ("_invalid.com/class=dev", "vendor"),
    ("invalid2.com-/class=dev", "vendor"),
    ("invalid3.com/_class=dev", "class"),
    ("invalid4.com/class_=dev", "class"),
    ("invalid5.com/class=-dev", "device name"),
    ("invalid6.com/class=dev:", "device name"),
    ("*.com/*dev=*gpu*", "vendor"),
    ("1vendor.com/class=dev", "vendor"),
    ("vendor.com/class/sub=dev", "class"),
    ("vendor.com/c=d=e", "device"),
    ("vendor.com/class", "missing vendor"),
    ("vendor3.com=device3", "missing vendor"),
    ("/dev/null", "missing vendor"),
    ("", "missing vendor"),
    (" vendor.com/c=d", "vendor"),
    ("vendor.com/c=d ", "device"),
    ("vendor.com/c=", "missing vendor"),
    ("=d", "missing vendor"),
    ("vendor.com/=d", "missing vendor"),
    ("vendör.com/c=d", "vendor"),
]


@pytest.mark.parametrize(("name", "parts"), VALID)
def test_valid_names_parse_into_their_parts(name: str, parts: tuple[str, str, str]) -> None:
    parsed = parse_qualified_name(name)
    assert (parsed.vendor, parsed.cls, parsed.device) == parts
    assert str(parsed) == name
    assert QualifiedName.parse(name) == parsed
    assert is_qualified_name(name)
    assert parsed.kind == f"{parts[0]}/{parts[1]}"


@pytest.mark.parametrize(("name", "part"), INVALID)
def test_invalid_names_name_the_bad_part(name: str, part: str) -> None:
    with pytest.raises(CdiNameError) as info:
        parse_qualified_name(name)
    assert part in str(info.value)
    assert go_quote(name) in str(info.value)
    assert info.value.hint
    assert isinstance(info.value, InvalidInputError)
    assert not is_qualified_name(name)


def test_parse_device_splits_on_the_first_separators_without_validating() -> None:
    assert parse_device("a/b/c=d") == ("a", "b/c", "d")
    assert parse_device("a/b=c=d") == ("a", "b", "c=d")
    assert parse_device("_x/y=z") == ("_x", "y", "z")
    assert parse_device("/dev/null") == ("", "", "/dev/null")
    assert parse_device("noequals/x") == ("", "", "noequals/x")
    assert parse_device("") == ("", "", "")


def test_parse_qualifier() -> None:
    assert parse_qualifier("vendor.com/class") == ("vendor.com", "class")
    assert parse_qualifier("vendor.com/class/x") == ("vendor.com", "class/x")
    assert parse_qualifier("vendor.comdevice") == ("", "vendor.comdevice")
    assert parse_qualifier("/class") == ("", "/class")
    assert parse_qualifier("vendor/") == ("", "vendor/")


def test_part_validators_follow_the_reference_rules() -> None:
    validate_vendor_name("a")
    validate_class_name("B")
    validate_device_name("0")
    validate_device_name("gpu:0.1_a-b")
    for bad, check in [
        ("", validate_vendor_name),
        ("1a", validate_vendor_name),
        ("a:b", validate_class_name),
        ("a-", validate_class_name),
        ("", validate_device_name),
        ("a=b", validate_device_name),
        ("-a", validate_device_name),
    ]:
        with pytest.raises(CdiNameError):
            check(bad)


def test_error_messages_use_the_reference_wording() -> None:
    with pytest.raises(CdiNameError, match=r'invalid vendor\. "1v", should start with letter'):
        validate_vendor_name("1v")
    with pytest.raises(CdiNameError, match=r"invalid class\. invalid character '/'"):
        validate_class_name("a/b")
    with pytest.raises(CdiNameError, match=r"invalid \(empty\) device name"):
        validate_device_name("")
    with pytest.raises(CdiNameError, match='unqualified device "x", missing vendor'):
        parse_qualified_name("x")


VENDOR_CLASS = st.from_regex(r"\A[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?\Z")
DEVICE = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?\Z")


@settings(deadline=None)
@given(VENDOR_CLASS, VENDOR_CLASS, DEVICE)
def test_generated_valid_names_round_trip(vendor: str, cls: str, device: str) -> None:
    name = qualified_name(vendor, cls, device)
    parsed = parse_qualified_name(name)
    assert (parsed.vendor, parsed.cls, parsed.device) == (vendor, cls, device)
    assert str(parsed) == name


@settings(deadline=None)
@given(st.text(max_size=40))
def test_any_text_parses_or_raises_a_name_error(text: str) -> None:
    try:
        parsed = parse_qualified_name(text)
    except CdiNameError:
        assert not is_qualified_name(text)
    else:
        assert is_qualified_name(text)
        assert str(parsed) == text


@settings(deadline=None)
@given(st.text(alphabet="ab1_.-:=/ ", max_size=12))
def test_is_qualified_name_agrees_with_the_part_rules(text: str) -> None:
    vendor, cls, device = parse_device(text)
    expected = True
    try:
        validate_vendor_name(vendor)
        validate_class_name(cls)
        validate_device_name(device)
    except CdiNameError:
        expected = False
    assert is_qualified_name(text) == (expected and bool(vendor and cls and device))
