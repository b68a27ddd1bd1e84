"""Numbers from outside text: digit runs are judged by their length before int() sees them."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio._echo import echo
from kata_vfio._numbers import decimal_digits, natural_key

RUNS = st.text("0123456789", min_size=1, max_size=30)
WORDS = st.lists(st.one_of(RUNS, st.text("ab-=/", min_size=1, max_size=3)), max_size=5).map("".join)


def _by_value(text: str) -> tuple[tuple[int, int, str], ...]:
    """The same order computed with int() (fine for these short runs)."""
    import re

    parts = re.split(r"([0-9]+)", text)
    return tuple((1, int(p), p) if i % 2 else (0, 0, p) for i, p in enumerate(parts))


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, max_size=8))
def test_natural_key_orders_digit_runs_by_value(names: list[str]) -> None:
    assert sorted(names, key=natural_key) == sorted(names, key=_by_value)


def test_natural_key_takes_runs_int_refuses() -> None:
    huge = "7" * (sys.get_int_max_str_digits() + 10)
    names = [f"a{huge}", "a9", f"a{huge[:-1]}"]
    assert sorted(names, key=natural_key) == ["a9", f"a{huge[:-1]}", f"a{huge}"]


@settings(max_examples=100, deadline=None)
@given(value=st.integers(0, 2**70), zeros=st.integers(0, 6000), limit=st.integers(0, 2**64))
def test_decimal_digits_bounds_before_converting(value: int, zeros: int, limit: int) -> None:
    text = "0" * zeros + str(value)
    assert decimal_digits(text, max_value=limit) == (value if value <= limit else None)


def test_decimal_digits_refuses_anything_but_ascii_digits() -> None:
    for text in ("", "-1", "+1", " 1", "1 ", "1_000", "\u0661", "0x10", "1" * 5000):
        assert decimal_digits(text, max_value=2**64) is None


def test_echo_cuts_long_input() -> None:
    assert echo("short") == "'short'"
    long = "x" * 10_000
    assert echo(long) == f"{'x' * 72!r}... (10000 characters)"
    assert echo(["y" * 100]).endswith("... (104 characters)")
