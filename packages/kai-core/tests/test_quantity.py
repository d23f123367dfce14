"""Tests for kai_core.api.quantity: exact Kubernetes quantity parsing, rounding and formatting."""

from __future__ import annotations

from fractions import Fraction

import pytest

from kai_core.api.quantity import QuantityError, format_quantity, parse_quantity, to_int, to_milli

GI = 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Fraction(0)),
        ("1", Fraction(1)),
        ("250m", Fraction(1, 4)),
        ("1500m", Fraction(3, 2)),
        ("1.5", Fraction(3, 2)),
        ("0.5m", Fraction(1, 2000)),
        ("100u", Fraction(1, 10_000)),
        ("3n", Fraction(3, 10**9)),
        ("1k", Fraction(1000)),
        ("2M", Fraction(2 * 10**6)),
        ("1.5G", Fraction(15 * 10**8)),
        ("4T", Fraction(4 * 10**12)),
        ("1P", Fraction(10**15)),
        ("2E", Fraction(2 * 10**18)),
        ("1Ki", Fraction(1024)),
        ("64Mi", Fraction(64 << 20)),
        ("80Gi", Fraction(80 * GI)),
        ("1.5Gi", Fraction(3 * GI, 2)),
        ("2Ti", Fraction(2 << 40)),
        ("1Pi", Fraction(1 << 50)),
        ("1Ei", Fraction(1 << 60)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1E-3", Fraction(1, 1000)),
        ("2.5e+2", Fraction(250)),
        ("-1.5k", Fraction(-1500)),
        ("+2", Fraction(2)),
        ("-0", Fraction(0)),
        ("1.", Fraction(1)),
        (".5", Fraction(1, 2)),
        ("007", Fraction(7)),
    ],
)
def test_parse_quantity_strings(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, Fraction(2)),
        (0, Fraction(0)),
        (-3, Fraction(-3)),
        (0.5, Fraction(1, 2)),
        (0.1, Fraction(1, 10)),  # the decimal the YAML author wrote, not the nearest binary float
        (1e3, Fraction(1000)),
        (Fraction(3, 2), Fraction(3, 2)),
    ],
)
def test_parse_quantity_yaml_numbers(value: float | Fraction, expected: Fraction) -> None:
    assert parse_quantity(value) == expected


def test_values_finer_than_a_nano_unit_round_up_like_kubernetes() -> None:
    assert parse_quantity("1e-12") == Fraction(1, 10**9)
    assert parse_quantity("-1e-12") == Fraction(-1, 10**9)
    assert parse_quantity("1.0000000001") == Fraction(1_000_000_001, 10**9)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3",
        "5Xi",
        "abc",
        ".",
        "-",
        "+",
        "Mi",
        "1K",
        "1ki",
        "1 ",
        " 1",
        "1e",
        "1e1.5",
        "1,5",
        "0x10",
        "1Gi1",
    ],
)
def test_invalid_quantity_strings_name_the_text(text: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [True, None, float("nan"), float("inf"), [1], {"value": "1"}])
def test_non_quantity_values_are_refused(value: object) -> None:
    with pytest.raises(QuantityError, match="invalid quantity"):
        parse_quantity(value)  # type: ignore[arg-type]


def test_huge_exponent_is_refused_instead_of_hanging() -> None:
    with pytest.raises(QuantityError, match="exponent"):
        parse_quantity("1e999999999")


@pytest.mark.parametrize(
    ("value", "milli", "units"),
    [
        ("0.5m", 1, 1),
        ("1m", 1, 1),
        ("1500m", 1500, 2),
        ("1", 1000, 1),
        ("2", 2000, 2),
        ("1.0001", 1001, 2),
        ("1n", 1, 1),
        ("0", 0, 0),
        ("-0.5m", -1, -1),
        ("-1500m", -1500, -2),
        ("8Gi", 8 * GI * 1000, 8 * GI),
        (0.25, 250, 1),
        (3, 3000, 3),
    ],
)
def test_to_milli_and_to_int_round_away_from_zero(value: str | float, milli: int, units: int) -> None:
    assert to_milli(value) == milli
    assert to_int(value) == units


@pytest.mark.parametrize(
    ("value", "binary", "text"),
    [
        (Fraction(3, 2), False, "1500m"),
        (2, False, "2"),
        (0, False, "0"),
        (1500, False, "1500"),
        (2000, False, "2k"),
        (Fraction(1, 2000), False, "500u"),
        (Fraction(3, 10**9), False, "3n"),
        (-1500, False, "-1500"),
        (Fraction(-1, 4), False, "-250m"),
        (8 * GI, True, "8Gi"),
        (8 * GI, False, "8589934592"),
        (1536 << 20, True, "1536Mi"),
        (1 << 60, True, "1Ei"),
        (1000, True, "1k"),  # not a multiple of 1024: decimal even when binary is asked for
        (Fraction(1, 2), True, "500m"),
        (-(2 << 30), True, "-2Gi"),
        (10**21, False, "1000E"),
    ],
)
def test_format_quantity(value: Fraction | int, binary: bool, text: str) -> None:
    assert format_quantity(value, binary=binary) == text


@pytest.mark.parametrize(
    "text",
    ["1500m", "8Gi", "1.5Gi", "0.5m", "1e3", "123456789n", "-7k", "3Ti", "999", "1E", "12345678901234567890"],
)
@pytest.mark.parametrize("binary", [False, True])
def test_format_round_trips_through_parse(text: str, binary: bool) -> None:
    value = parse_quantity(text)
    assert parse_quantity(format_quantity(value, binary=binary)) == value


def test_format_quantity_rejects_non_numbers() -> None:
    with pytest.raises(QuantityError):
        format_quantity("1Gi")  # type: ignore[arg-type]
    with pytest.raises(QuantityError):
        format_quantity(1.5)  # type: ignore[arg-type]
