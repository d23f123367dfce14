"""Kubernetes ``resource.Quantity`` parsing and formatting, exact.

Kubernetes writes amounts of resources as strings such as ``"1500m"``, ``"80Gi"`` or ``"1e3"``; YAML
manifests may also carry plain numbers (``cpu: 2`` or ``cpu: 0.5``). The scheduler compares and adds these
amounts, so they must never go through binary floating point: :func:`parse_quantity` returns a
:class:`fractions.Fraction` holding the exact value in base units.

Grammar (as in ``k8s.io/apimachinery/pkg/api/resource``)::

    quantity  ::= [sign] number [suffix]
    number    ::= digits | digits "." [digits] | "." digits
    suffix    ::= n | u | m | "" | k | M | G | T | P | E        (powers of 1000)
                | Ki | Mi | Gi | Ti | Pi | Ei                    (powers of 1024)
                | ("e" | "E") [sign] digits                     (power of ten)

Like Kubernetes, a non-zero value finer than one nano-unit is rounded up (away from zero) to the next
nano-unit, so ``"1e-12"`` parses as ``1n``. :func:`to_milli` and :func:`to_int` round away from zero as
``Quantity.MilliValue()`` and ``Quantity.Value()`` do, so a request of ``0.5m`` CPU counts as ``1m``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = [
    "QuantityError",
    "format_quantity",
    "parse_quantity",
    "to_int",
    "to_milli",
]

_DECIMAL_SUFFIXES: dict[str, int] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}

# Largest power of ten accepted in the exponent form. Kubernetes allows any int32, but 10**2_000_000_000
# cannot be computed; no real quantity comes anywhere near this bound.
_MAX_EXPONENT = 1000

_QUANTITY_RE = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?"
)

_NANO = Fraction(1, 10**9)


class QuantityError(ValueError):
    """A value is not a valid Kubernetes quantity; the message names the offending text."""


def _round_away(value: Fraction) -> int:
    """Round to an integer away from zero (ceil for positive values, floor for negative ones)."""
    if value >= 0:
        return math.ceil(value)
    return -math.ceil(-value)


def _round_to_nano(value: Fraction) -> Fraction:
    """Round a non-zero value finer than 1n up (away from zero) to whole nano-units, as Kubernetes does."""
    if (10**9) % value.denominator == 0:
        return value
    return Fraction(_round_away(value * 10**9), 10**9)


def parse_quantity(value: str | int | float) -> Fraction:
    """Parse a Kubernetes quantity into its exact value in base units.

    ``value`` may be a quantity string (``"250m"``, ``"8Gi"``, ``"1.5e3"``) or an ``int``/``float`` as
    found in YAML manifests. Raises :class:`QuantityError` naming the text when it is not a quantity.
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: a boolean is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}: not a finite number")
        # repr() gives the shortest decimal that reads back as this float: "0.1", not 0.1000000000000000055.
        return _round_to_nano(Fraction(repr(value)))
    if isinstance(value, Fraction):
        return _round_to_nano(value)
    if not isinstance(value, str):
        raise QuantityError(
            f"invalid quantity {value!r}: expected a string or a number, got {type(value).__name__}"
        )
    if not value:
        raise QuantityError("invalid quantity '': empty string")
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise QuantityError(
            f"invalid quantity {value!r}: expected a number with an optional suffix "
            "(n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3)"
        )
    number = Fraction(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _DECIMAL_SUFFIXES:
        amount = number * Fraction(10) ** _DECIMAL_SUFFIXES[suffix]
    elif suffix in _BINARY_SUFFIXES:
        amount = number * (1 << _BINARY_SUFFIXES[suffix])
    else:
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"invalid quantity {value!r}: exponent {exponent} is out of range")
        amount = number * Fraction(10) ** exponent
    if match["sign"] == "-":
        amount = -amount
    return _round_to_nano(amount)


def to_milli(value: str | int | float | Fraction) -> int:
    """Return the quantity in milli-units, rounded away from zero (Kubernetes ``MilliValue``): 0.5m -> 1."""
    return _round_away(parse_quantity(value) * 1000)


def to_int(value: str | int | float | Fraction) -> int:
    """Return the quantity in whole units, rounded away from zero (Kubernetes ``Value``): 1500m -> 2."""
    return _round_away(parse_quantity(value))


def format_quantity(value: Fraction | int, binary: bool = False) -> str:
    """Format a value in base units as a canonical quantity string that :func:`parse_quantity` reads back.

    Decimal form uses the largest power-of-1000 suffix that keeps an integer mantissa: ``Fraction(3, 2)``
    -> ``"1500m"``, ``2000`` -> ``"2k"``, ``1500`` -> ``"1500"``. With ``binary=True`` a whole multiple of
    1024 uses the largest binary suffix (``8 * 2**30`` -> ``"8Gi"``); anything else falls back to decimal.
    Values finer than one nano-unit are rounded up to 1n first, as Kubernetes does.
    """
    if isinstance(value, bool) or not isinstance(value, (int, Fraction)):
        raise QuantityError(f"cannot format {value!r} as a quantity: expected an int or a Fraction")
    amount = _round_to_nano(Fraction(value))
    if amount == 0:
        return "0"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if binary and amount.denominator == 1 and amount.numerator % 1024 == 0:
        mantissa = amount.numerator
        chosen = ""
        for suffix, power in _BINARY_SUFFIXES.items():
            if mantissa % (1 << power) == 0:
                chosen = suffix
        mantissa >>= _BINARY_SUFFIXES[chosen]
        return f"{sign}{mantissa}{chosen}"
    # Write amount = digits * 10**exp with an integer number of nano-units, then pull out whole thousands.
    scaled = amount.numerator * (10**9 // amount.denominator)
    exp = -9
    while exp < 18 and scaled % 1000 == 0:
        scaled //= 1000
        exp += 3
    suffix = next(name for name, power in _DECIMAL_SUFFIXES.items() if power == exp)
    return f"{sign}{scaled}{suffix}"
