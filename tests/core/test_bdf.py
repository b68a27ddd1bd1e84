"""The strict PCI address type: parse, format, order; nothing but BdfError escapes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_vfio import Bdf, errors

addresses = st.tuples(
    st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7)
)


@given(addresses)
def test_format_parse_round_trip(parts: tuple[int, int, int, int]) -> None:
    bdf = Bdf.from_parts(*parts)
    assert (bdf.domain, bdf.bus, bdf.device, bdf.function) == parts
    assert Bdf(str(bdf)) == bdf
    assert Bdf(str(bdf).upper()) == bdf
    assert hash(Bdf(str(bdf))) == hash(bdf)
    assert eval(repr(bdf), {"Bdf": Bdf}) == bdf  # repr is a constructor call


@given(addresses, addresses)
def test_order_is_numeric(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> None:
    assert (Bdf.from_parts(*a) < Bdf.from_parts(*b)) == (a < b)


@given(st.text(max_size=40))
def test_anything_else_is_a_bdf_error(text: str) -> None:
    try:
        bdf = Bdf(text)
    except errors.BdfError as exc:
        if text.isprintable() and '"' not in text and "\\" not in text:
            assert f'"{text}"' in str(exc)  # the message names the input
        assert exc.hint
    else:
        assert str(bdf) == text.lower() or str(bdf) == f"0000:{text.lower()}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 0000:01:00.0",
        "0000:01:00.0 ",
        "0000:01:00.0/../..",
        "0000:01:00.8",
        "0000:01:20.0",
        "0000:01:00",
        "000:01:00.0",
        "1:00.0",
        "0000:01:00.0\n",
        "0000:01:00.0\x00",
        "+000:01:00.0",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(errors.BdfError):
        Bdf(text)


def test_short_form_and_case() -> None:
    assert str(Bdf("AF:1F.7")) == "0000:af:1f.7"
    assert Bdf("af:1f.7") == Bdf("0000:AF:1F.7")
    assert str(Bdf("10000:e1:00.0")) == "10000:e1:00.0"
    assert Bdf("01:00.1").slot == Bdf("01:00.0")


def test_from_parts_checks_ranges() -> None:
    with pytest.raises(errors.BdfError):
        Bdf.from_parts(0, 1, 0x20, 0)
    with pytest.raises(errors.BdfError):
        Bdf.from_parts(0, 1, 0, 8)
    with pytest.raises(OverflowError):
        Bdf.from_parts(0, 256, 0, 0)
