"""CEL selectors for DRA devices, with Kubernetes semantics, on ``cel-expr-python`` (Google's cel-cpp).

DeviceClasses and ResourceClaims pick devices with CEL expressions over a ``device`` variable::

    device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'

Usage: ``compile_selector(expr)`` once per expression (cached), ``device_env(...)`` once per device, then
``selector.matches(env)``, which costs a couple of microseconds.

What an expression can use, as in the Kubernetes DRA environment:

* ``device.driver`` (string), ``device.attributes[domain][id]`` (int, bool, string or Semver, or a list
  of one of them),
  ``device.capacity[domain][id]`` (Quantity) and ``device.allowMultipleAllocations`` (bool). A name without
  a domain belongs to the driver's domain. An unknown domain gives an empty map; an unknown id is an error
  (guard with ``has(...)`` or ``.?id.orValue(...)``).
* The CEL standard library, the strings extension (``lowerAscii`` ...), ``matches``, ``cel.bind`` and
  optional types.
* ``quantity(s)``, ``isQuantity(s)`` and on a Quantity ``compareTo``, ``isGreaterThan``, ``isLessThan``,
  ``asInteger``, ``isInteger``, ``asApproximateFloat``, ``sign``, ``add``, ``sub`` (Quantity or int), ``mul``.
* ``semver(s[, normalize])``, ``isSemver(s[, normalize])`` and on a Semver ``compareTo``,
  ``isGreaterThan``, ``isLessThan``, ``major``, ``minor``, ``patch``.
* ``a.includes(v)`` on an attribute: a list attribute holds ``v``, or a scalar equals it.

How it is built, and why:

* cel-expr-python cannot carry Python objects as CEL values (an abstract type fails at evaluation with
  UNIMPLEMENTED). A Quantity therefore travels as a ``uint``: its value in milli-units plus 2**63 (the bias
  keeps negative values representable and preserves order), and a Semver as ``bytes`` holding the
  canonical version text. Both are CEL kinds no device attribute uses, so ``q.add(5)`` (int) and
  ``q.add(quantity('5'))`` (Quantity) dispatch to different functions.
* Every expression is type-checked twice. First against a *checking* environment in which Quantity and
  Semver are abstract types: this refuses what the API server refuses, such as
  ``device.capacity['d'].memory > 5`` (Quantity has no ``>``) or a non-bool result type. Then it is compiled
  for real against the *evaluation* environment, where they are ``uint``/``bytes`` with Python functions.
* Constant arguments of ``quantity()``, ``semver()`` and ``.matches()`` are evaluated at compile time,
  so ``quantity('abc')`` is refused by :func:`compile_selector` as the API server refuses it.
* ``device`` is declared as the four qualified variables ``device.driver``, ``device.attributes``,
  ``device.capacity`` and ``device.allowMultipleAllocations``, because cel-expr-python has no object types
  without protobuf. The checker then refuses unknown fields such as ``device.drivr`` at compile time,
  but ``device`` alone cannot be used (``cel.bind(d, device, ...)`` is refused; Kubernetes accepts it).
* cel-cpp maps have no default value, so an unknown domain cannot yield an empty map by itself. The domains
  an expression indexes with literal strings (``device.attributes['gpu.nvidia.com']``) are added as empty
  maps to the device's activation. When the expression uses the top-level maps otherwise (a computed
  domain, ``'x' in device.attributes``, ``size(...)``) nothing is added up front, which keeps ``in`` and
  ``size`` exact; a lookup that then fails on a missing domain is retried with that domain added.

Cost: cel-expr-python exposes no cost limit and an evaluation cannot be interrupted, so the bound is
static, as the API server's: :func:`compile_selector` estimates an upper bound of the work an expression
can do (:mod:`kai_core.dra.celcost`: sizes of values, string growth through ``+``/``replace``/``cel.bind``,
comprehension iterations) and refuses it above :data:`~kai_core.dra.celcost.MAX_ESTIMATED_COST`. At run
time cel-cpp also stops after 10,000 comprehension iterations per evaluation (a :class:`CelEvalError`).

Other known gaps: Quantity values are held in milli-units, so sub-milli capacities are rounded up to 1m
and magnitudes above about 9.2e15 units are refused; Semver build metadata is dropped (Kubernetes ignores
it in comparisons too); the ``div`` family of Quantity functions is not provided. List attributes
(``strings: [...]``...) are CEL lists, and ``includes()`` (a list holds the value, or a scalar equals
it) is there whatever ``DRAListTypeAttributes`` says, as in upstream's environment for stored
expressions, which the scheduler uses.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_optional, ext_strings

from kai_core.api.errors import short_repr
from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.dra.celcost import MAX_ESTIMATED_COST, CostEstimateError, estimate_cost

__all__ = [
    "MAX_EXPRESSION_BYTES",
    "CelCompileError",
    "CelEvalError",
    "DeviceEnv",
    "Selector",
    "compile_selector",
    "device_env",
]

#: Kubernetes limits a selector expression to 10 KiB (``CELSelectorExpressionMaxLength``).
MAX_EXPRESSION_BYTES = 10 * 1024

_T = cel.Type
_QUANTITY_BIAS = 1 << 63
_UINT64_MAX = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
#: the longest string or version attribute the API allows (``DeviceAttributeMaxValueLength``)
_MAX_ATTRIBUTE_CHARS = 64
_INT64_MAX = (1 << 63) - 1
_MAX_DOMAIN_RETRIES = 8
_NO_DOMAINS: frozenset[str] = frozenset()


# --------------------------------------------------------------------------------------------- errors


class CelCompileError(ValueError):
    """A selector expression cannot be compiled: bad syntax, type error, non-bool result, bad literal."""

    def __init__(self, expression: str, message: str) -> None:
        self.expression = expression
        self.message = message
        super().__init__(f"CEL expression {expression!r}: {message}")


class CelEvalError(RuntimeError):
    """Evaluating a selector failed: unknown attribute id, non-bool result, error inside a function."""

    def __init__(self, expression: str, message: str) -> None:
        self.expression = expression
        self.message = message
        super().__init__(f"CEL expression {expression!r}: {message}")


# --------------------------------------------------------------------------------- quantity values


def _quantity_from_milli(milli: int, what: str) -> int:
    """Encode a milli-unit count as the biased ``uint`` that stands for a Quantity inside CEL."""
    if not _INT64_MIN <= milli <= _INT64_MAX:
        raise ValueError(
            f"{what} is out of range: at most {_INT64_MAX // 1000} units in magnitude are supported"
        )
    return milli + _QUANTITY_BIAS


def _milli_of(value: Fraction) -> int:
    """Round a value in base units up (away from zero) to whole milli-units."""
    scaled = value * 1000
    return math.ceil(scaled) if scaled >= 0 else -math.ceil(-scaled)


def _format_milli(milli: int) -> str:
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


@functools.lru_cache(maxsize=4096)
def _cel_quantity(text: str) -> int:
    try:
        value = parse_quantity(text)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None
    return _quantity_from_milli(_milli_of(value), f"quantity {text!r}")


def _cel_is_quantity(text: str) -> bool:
    try:
        _cel_quantity(text)
    except ValueError:
        return False
    return True


def _q_compare(a: int, b: int) -> int:
    return (a > b) - (a < b)


def _q_greater(a: int, b: int) -> bool:
    return a > b


def _q_less(a: int, b: int) -> bool:
    return a < b


def _q_sign(a: int) -> int:
    return _q_compare(a, _QUANTITY_BIAS)


def _q_is_integer(a: int) -> bool:
    return (a - _QUANTITY_BIAS) % 1000 == 0


def _q_as_integer(a: int) -> int:
    milli = a - _QUANTITY_BIAS
    if milli % 1000:
        raise ValueError(
            f"cannot convert quantity {_format_milli(milli)} to an integer without losing precision"
        )
    return milli // 1000


def _q_as_float(a: int) -> float:
    return (a - _QUANTITY_BIAS) / 1000


def _q_add(a: int, b: int) -> int:
    return _quantity_from_milli(a + b - 2 * _QUANTITY_BIAS, "result of add()")


def _q_add_int(a: int, n: int) -> int:
    return _quantity_from_milli(a - _QUANTITY_BIAS + n * 1000, "result of add()")


def _q_sub(a: int, b: int) -> int:
    return _quantity_from_milli(a - b, "result of sub()")


def _q_sub_int(a: int, n: int) -> int:
    return _quantity_from_milli(a - _QUANTITY_BIAS - n * 1000, "result of sub()")


def _q_mul_int(a: int, n: int) -> int:
    return _quantity_from_milli((a - _QUANTITY_BIAS) * n, "result of mul()")


# ----------------------------------------------------------------------------------- semver values

_SEMVER_RE = re.compile(
    r"(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_NUMERIC_ID_RE = re.compile(r"[0-9]+")


@functools.lru_cache(maxsize=8192)
def _parse_semver(text: str, normalize: bool = False) -> bytes:
    """Validate a semantic version (semver.org 2.0, as blang/semver ``Parse``) and return canonical bytes.

    With ``normalize`` a leading ``v`` is dropped, leading zeros are removed and a missing minor or patch
    number becomes 0 (``v1.02`` -> ``1.2.0``), as Kubernetes' ``semver(s, true)`` does. Build metadata is
    dropped from the canonical form because it never takes part in comparisons.
    """
    if normalize:
        text = text.removeprefix("v")
        parts = text.split(".", 2)
        for i, part in enumerate(parts):
            if len(part) > 1:
                stripped = part.lstrip("0")
                if not stripped or not stripped[0].isdigit():
                    stripped = "0" + stripped
                parts[i] = stripped
        if len(parts) < 3:
            if "+" in parts[-1] or "-" in parts[-1]:
                raise ValueError(
                    f"invalid semantic version {text!r}: pre-release or build data needs a full version"
                )
            parts += ["0"] * (3 - len(parts))
        text = ".".join(parts)
    match = _SEMVER_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid semantic version {text!r}: expected MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]"
        )
    for field in ("major", "minor", "patch"):
        if int(match[field]) > _UINT64_MAX:
            raise ValueError(f"invalid semantic version {text!r}: {field} version is too large")
    pre = match["pre"]
    if pre:
        for ident in pre.split("."):
            if _NUMERIC_ID_RE.fullmatch(ident) and len(ident) > 1 and ident[0] == "0":
                raise ValueError(
                    f"invalid semantic version {text!r}: pre-release number {ident!r} has a leading zero"
                )
    canonical = f"{match['major']}.{match['minor']}.{match['patch']}" + (f"-{pre}" if pre else "")
    return canonical.encode()


@functools.lru_cache(maxsize=8192)
def _semver_key(version: bytes) -> tuple[Any, ...]:
    """Sort key giving semver precedence: numbers numerically, a pre-release before its release."""
    core, _, pre = version.decode().partition("-")
    major, minor, patch = (int(x) for x in core.split("."))
    if not pre:
        return (major, minor, patch, (1,))
    ids = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre.split("."))
    return (major, minor, patch, (0, ids))


def _cel_semver(text: str) -> bytes:
    return _parse_semver(text)


def _cel_semver_normalize(text: str, normalize: bool) -> bytes:
    return _parse_semver(text, normalize)


def _cel_is_semver(text: str) -> bool:
    return _cel_is_semver_normalize(text, False)


def _cel_is_semver_normalize(text: str, normalize: bool) -> bool:
    try:
        _parse_semver(text, normalize)
    except ValueError:
        return False
    return True


# cel-expr-python hands bytes to Python functions as bytearray, which is unhashable: hence bytes(...).


def _v_compare(a: bytes, b: bytes) -> int:
    ka, kb = _semver_key(bytes(a)), _semver_key(bytes(b))
    return (ka > kb) - (ka < kb)


def _v_greater(a: bytes, b: bytes) -> bool:
    return _semver_key(bytes(a)) > _semver_key(bytes(b))


def _v_less(a: bytes, b: bytes) -> bool:
    return _semver_key(bytes(a)) < _semver_key(bytes(b))


def _v_part(index: int) -> Callable[[bytes], int]:
    def part(a: bytes) -> int:
        value = _semver_key(bytes(a))[index]
        if value > _INT64_MAX:
            raise ValueError(f"version number {value} does not fit in an int")
        return value

    return part


# ------------------------------------------------------------------------------------ includes()

#: resourceapi.ResourceSliceMaxAttributeValuesPerDevice: includes() refuses to walk longer lists
_MAX_INCLUDES_LIST = 48
# cel-cpp dispatches a Python function on the arguments' runtime kinds (a ``dyn`` parameter matches
# none), so the evaluation environment declares includes() for every kind an attribute or a literal
# argument can have; Semver is bytes there, and Quantity a uint.
_INCLUDES_KINDS = (("int", _T.INT), ("uint", _T.UINT), ("double", _T.DOUBLE), ("bool", _T.BOOL),
                   ("string", _T.STRING), ("bytes", _T.BYTES))


def _cel_equal(a: Any, b: Any) -> bool:
    """CEL's ``==`` for the scalar kinds attributes have: numbers compare across int, uint and
    double, a bool only equals a bool, bytes (Semver here) only bytes."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray)):
        return bytes(a) == bytes(b)
    return type(a) is type(b) and a == b


def _cel_includes(target: Any, item: Any) -> bool:
    """``<attribute>.includes(<value>)`` (KEP-5491): a list attribute holds the value, or a scalar
    equals it; like upstream, a list longer than the API allows is an error once the walk reaches
    past that length."""
    if isinstance(target, list):
        for index, element in enumerate(target):
            if index >= _MAX_INCLUDES_LIST:
                raise ValueError(f"'includes' function cannot be applied to lists longer than "
                                 f"{_MAX_INCLUDES_LIST} values")
            if _cel_equal(element, item):
                return True
        return False
    return _cel_equal(target, item)


def _includes_overloads(with_impls: bool) -> list[Any]:
    if not with_impls:  # type checking: any attribute, any value
        return [cel.Overload("dra_includes_dyn_dyn", _T.BOOL, [_T.DYN, _T.DYN], is_member=True)]
    targets = (("list", _T.LIST), *_INCLUDES_KINDS)
    return [
        cel.Overload(f"dra_includes_{t}_{a}", _T.BOOL, [target, arg], is_member=True, impl=_cel_includes)
        for t, target in targets
        for a, arg in _INCLUDES_KINDS
    ]


# ------------------------------------------------------------------------------------ environments

# (function, overload id, member?, parameter types, return type, implementation). "Q" and "S" stand
# for Quantity and Semver and are mapped per environment.
_FUNCTIONS: list[tuple[str, str, bool, tuple[Any, ...], Any, Callable[..., Any]]] = [
    ("quantity", "string_to_quantity", False, (_T.STRING,), "Q", _cel_quantity),
    ("isQuantity", "is_quantity_string", False, (_T.STRING,), _T.BOOL, _cel_is_quantity),
    ("sign", "quantity_sign", False, ("Q",), _T.INT, _q_sign),
    ("sign", "quantity_sign_member", True, ("Q",), _T.INT, _q_sign),
    ("isGreaterThan", "quantity_is_greater_than", True, ("Q", "Q"), _T.BOOL, _q_greater),
    ("isLessThan", "quantity_is_less_than", True, ("Q", "Q"), _T.BOOL, _q_less),
    ("compareTo", "quantity_compare_to", True, ("Q", "Q"), _T.INT, _q_compare),
    ("asApproximateFloat", "quantity_get_float", True, ("Q",), _T.DOUBLE, _q_as_float),
    ("asInteger", "quantity_get_int", True, ("Q",), _T.INT, _q_as_integer),
    ("isInteger", "quantity_is_integer", True, ("Q",), _T.BOOL, _q_is_integer),
    ("add", "quantity_add", True, ("Q", "Q"), "Q", _q_add),
    ("add", "quantity_add_int", True, ("Q", _T.INT), "Q", _q_add_int),
    ("sub", "quantity_sub", True, ("Q", "Q"), "Q", _q_sub),
    ("sub", "quantity_sub_int", True, ("Q", _T.INT), "Q", _q_sub_int),
    ("mul", "quantity_multiply_int", True, ("Q", _T.INT), "Q", _q_mul_int),
    ("semver", "string_to_semver", False, (_T.STRING,), "S", _cel_semver),
    ("semver", "string_bool_to_semver", False, (_T.STRING, _T.BOOL), "S", _cel_semver_normalize),
    ("isSemver", "is_semver_string", False, (_T.STRING,), _T.BOOL, _cel_is_semver),
    ("isSemver", "is_semver_string_bool", False, (_T.STRING, _T.BOOL), _T.BOOL, _cel_is_semver_normalize),
    ("isGreaterThan", "semver_is_greater_than", True, ("S", "S"), _T.BOOL, _v_greater),
    ("isLessThan", "semver_is_less_than", True, ("S", "S"), _T.BOOL, _v_less),
    ("compareTo", "semver_compare_to", True, ("S", "S"), _T.INT, _v_compare),
    ("major", "semver_major", True, ("S",), _T.INT, _v_part(0)),
    ("minor", "semver_minor", True, ("S",), _T.INT, _v_part(1)),
    ("patch", "semver_patch", True, ("S",), _T.INT, _v_part(2)),
]


def _build_env(quantity_type: Any, semver_type: Any, with_impls: bool) -> Any:
    """Build a CEL environment where Quantity and Semver are the given types."""

    def resolve(t: Any) -> Any:
        if isinstance(t, str):
            return quantity_type if t == "Q" else semver_type
        return t

    overloads: dict[str, list[Any]] = {}
    for name, overload_id, member, params, result, impl in _FUNCTIONS:
        overloads.setdefault(name, []).append(
            cel.Overload(
                overload_id,
                resolve(result),
                [resolve(p) for p in params],
                is_member=member,
                impl=impl if with_impls else None,
            )
        )
    overloads["includes"] = _includes_overloads(with_impls)
    variables = {
        "device.driver": _T.STRING,
        "device.attributes": _T.Map(_T.STRING, _T.Map(_T.STRING, _T.DYN)),
        "device.capacity": _T.Map(_T.STRING, _T.Map(_T.STRING, quantity_type)),
        "device.allowMultipleAllocations": _T.BOOL,
    }
    return cel.NewEnv(
        variables=variables,
        extensions=[ext_strings.ExtStrings(), ext_bindings.ExtBindings(), ext_optional.ExtOptional()],
        functions=[cel.FunctionDecl(name, decls) for name, decls in overloads.items()],
    )


@functools.cache
def _check_env() -> Any:
    """Environment for type checking only: Quantity and Semver are opaque, as in Kubernetes."""
    return _build_env(_T.AbstractType("Quantity"), _T.AbstractType("Semver"), with_impls=False)


@functools.cache
def _eval_env() -> Any:
    """Environment that runs expressions: Quantity is a biased uint, Semver canonical bytes."""
    return _build_env(_T.UINT, _T.BYTES, with_impls=True)


# ------------------------------------------------------------------------------ expression scanning

_TOKEN_RE = re.compile(
    r"""
      (?P<ws>\s+|//[^\n]*)
    | (?P<str>
          [rR][bB]?(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
        | [bB][rR](?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
        | [bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
                 |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
      )
    | (?P<num>0[xX][0-9a-fA-F]+[uU]?|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[uU]?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<other>.)
    """,
    re.VERBOSE,
)

_LITERAL_CHECKED_FUNCTIONS = frozenset({"quantity", "semver"})
_TOP_LEVEL_MAPS = frozenset({"attributes", "capacity"})


def _tokens(expression: str) -> list[tuple[str, str, int, int]]:
    """Split an expression (already known to parse) into (kind, text, start, end), dropping whitespace."""
    out = []
    for m in _TOKEN_RE.finditer(expression):
        kind = m.lastgroup or "other"
        if kind != "ws":
            out.append((kind, m.group(), m.start(), m.end()))
    return out


def _literal_value(literal: str) -> Any:
    """Evaluate a CEL literal with CEL itself, so escapes mean exactly what they mean to CEL."""
    return _eval_env().compile(literal).eval().value()


def _scan(expression: str) -> tuple[frozenset[str], bool, list[str]]:
    """Find what compile_selector needs to know from the token stream.

    Returns the domains indexed with a literal string (``device.attributes['x']``), whether the top-level
    maps are used any other way, and the constant calls to validate (``quantity('1Gi')``,
    ``''.matches('re')``) as snippets of CEL.
    """
    toks = _tokens(expression)
    domains: set[str] = set()
    other_use = False
    constant_calls: list[str] = []

    def text(i: int) -> str | None:
        return toks[i][1] if 0 <= i < len(toks) else None

    def kind(i: int) -> str | None:
        return toks[i][0] if 0 <= i < len(toks) else None

    for i, (k, t, start, _end) in enumerate(toks):
        if k != "ident":
            continue
        if t in _TOP_LEVEL_MAPS and text(i - 1) == "." and text(i - 2) == "device" and text(i - 3) != ".":
            j = i + 1
            if text(j) == "[":
                j += 1
                if text(j) == "?":
                    j += 1
                if kind(j) == "str" and text(j + 1) == "]":
                    value = _literal_value(toks[j][1])
                    if isinstance(value, str):
                        domains.add(value)
                        continue
            other_use = True
        elif (
            t in _LITERAL_CHECKED_FUNCTIONS
            and text(i - 1) != "."
            and text(i + 1) == "("
            and kind(i + 2) == "str"
        ):
            j = i + 3
            if text(j) == "," and text(j + 1) in ("true", "false"):
                j += 2
            if text(j) == ")":
                constant_calls.append(expression[start : toks[j][3]])
        elif (
            t == "matches"
            and text(i - 1) == "."
            and text(i + 1) == "("
            and kind(i + 2) == "str"
            and text(i + 3) == ")"
        ):
            constant_calls.append(f"''.matches({toks[i + 2][1]})")
    return frozenset(domains), other_use, constant_calls


# ------------------------------------------------------------------------------------ device input


def _attribute_value(value: Any, where: str | _Where) -> Any:
    """Convert one API-shaped attribute (``{"int": 3}``, ``{"version": "1.2.3"}``...) to its CEL value."""
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ValueError(
                f"{where}: expected exactly one of int, bool, string or version, got {sorted(value)}"
            )
        ((key, inner),) = value.items()
        if key == "int" and isinstance(inner, int) and not isinstance(inner, bool):
            if not _INT64_MIN <= inner <= _INT64_MAX:
                raise ValueError(f"{where}: int value {inner} does not fit in 64 bits")
            return inner
        if key == "bool" and isinstance(inner, bool):
            return inner
        if key in ("string", "version") and isinstance(inner, str) and len(inner) > _MAX_ATTRIBUTE_CHARS:
            # the API server refuses these; the cost estimate of selectors counts on it
            raise ValueError(f"{where}: a {key} of {len(inner):,} characters, more than the "
                             f"{_MAX_ATTRIBUTE_CHARS} the API allows")
        if key == "string" and isinstance(inner, str):
            return inner
        if key == "version" and isinstance(inner, str):
            try:
                return _parse_semver(inner)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        if key in ("ints", "bools", "strings", "versions") and isinstance(inner, list):
            element = key[:-1]
            return [_attribute_value({element: item}, f"{where}[{n}]") for n, item in enumerate(inner)]
        raise ValueError(f"{where}: unsupported attribute value {key}={short_repr(inner)}")
    # Convenience for tests and callers holding plain values: bool, int and str stand for themselves.
    if isinstance(value, (bool, str)) or (isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX):
        return value
    raise ValueError(f"{where}: expected an attribute like {{'string': 'gpu'}}, got {short_repr(value)}")


def _capacity_value(value: Any, where: str | _Where) -> int:
    """Convert one API-shaped capacity (``{"value": "80Gi"}`` or a bare quantity) to its CEL value."""
    raw = value.get("value") if isinstance(value, Mapping) else value
    if raw is None:
        raise ValueError(f"{where}: expected {{'value': <quantity>}}, got {value!r}")
    try:
        if isinstance(raw, str):
            return _cel_quantity(raw)  # cached: devices of one model repeat the same strings
        return _quantity_from_milli(_milli_of(parse_quantity(raw)), f"quantity {raw!r}")
    except ValueError as exc:  # QuantityError included
        raise ValueError(f"{where}: {exc}") from None


def _split_name(name: Any, driver: str, where: str | _Where) -> tuple[str, str]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a name must be a non-empty string, got {name!r}")
    domain, sep, ident = name.partition("/")
    if not sep:
        return driver, name
    if not domain or not ident:
        raise ValueError(f"{where}: {name!r} is not a valid qualified name (domain/id)")
    return domain, ident


class DeviceEnv:
    """The ``device`` variable for one device, converted once and reused for every selector.

    Build it with :func:`device_env`. It caches the CEL activations it hands to :meth:`Selector.matches`,
    so keep one per device (for example next to the device in the scheduler's snapshot).
    """

    __slots__ = (
        "_activations",
        "_attributes",
        "_capacity",
        "_domains",
        "allow_multiple_allocations",
        "driver",
    )

    def __init__(
        self,
        driver: str,
        attributes: dict[str, dict[str, Any]],
        capacity: dict[str, dict[str, int]],
        allow_multiple_allocations: bool = False,
    ) -> None:
        self.driver = driver
        self.allow_multiple_allocations = allow_multiple_allocations
        self._attributes = attributes
        self._capacity = capacity
        self._domains = frozenset(attributes) | frozenset(capacity)
        self._activations: dict[frozenset[str], Any] = {}

    def __repr__(self) -> str:
        return f"DeviceEnv(driver={self.driver!r}, domains={sorted(self._domains)!r})"

    def _activation(self, extra_domains: frozenset[str]) -> Any:
        """The activation with ``extra_domains`` present (as empty maps where the device lacks them)."""
        act = self._activations.get(extra_domains)
        if act is None:
            missing = extra_domains - self._domains
            if missing:
                act = self._build_activation(missing)
            else:
                act = self._activations.get(_NO_DOMAINS) or self._build_activation(_NO_DOMAINS)
                self._activations[_NO_DOMAINS] = act
            # Plain dict assignment: concurrent callers may both build, which is harmless.
            self._activations[extra_domains] = act
        return act

    def _build_activation(self, missing: frozenset[str]) -> Any:
        attributes, capacity = self._attributes, self._capacity
        if missing:
            attributes = {**attributes, **{d: {} for d in missing if d not in attributes}}
            capacity = {**capacity, **{d: {} for d in missing if d not in capacity}}
        return _eval_env().Activation(
            {
                "device.driver": self.driver,
                "device.attributes": attributes,
                "device.capacity": capacity,
                "device.allowMultipleAllocations": self.allow_multiple_allocations,
            }
        )


class _Where:
    """Where a device field is, for an error message: built only when a message is (an f-string
    calls ``__format__``), since the fields of thousands of devices are read with no error at all."""

    __slots__ = ("driver", "field", "name")

    def __init__(self, driver: str, field: str, name: object) -> None:
        self.driver, self.field, self.name = driver, field, name

    def __str__(self) -> str:
        return f"device of driver {short_repr(self.driver)}: {self.field} {short_repr(self.name)}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def device_env(
    driver: str,
    attributes: dict | None,
    capacity: dict | None,
    *,
    allow_multiple_allocations: bool = False,
) -> DeviceEnv:
    """Build the ``device`` variable from a ResourceSlice device's ``attributes`` and ``capacity``.

    ``attributes`` maps a name to an API-shaped value (``{"type": {"string": "gpu"}}``); ``capacity`` maps a
    name to ``{"value": "80Gi"}``. A name without a domain belongs to ``driver``'s domain;
    ``resource.kubernetes.io/pcieRoot`` is domain ``resource.kubernetes.io``, id ``pcieRoot``. Raises
    ``ValueError`` naming the attribute when a value is malformed (e.g. a version that is not semver).
    """
    if not isinstance(driver, str) or not driver:
        raise ValueError(f"device driver must be a non-empty string, got {driver!r}")
    attrs: dict[str, dict[str, Any]] = {}
    for name, value in (attributes or {}).items():
        where = _Where(driver, "attribute", name)
        domain, ident = _split_name(name, driver, where)
        attrs.setdefault(domain, {})[ident] = _attribute_value(value, where)
    caps: dict[str, dict[str, int]] = {}
    for name, value in (capacity or {}).items():
        where = _Where(driver, "capacity", name)
        domain, ident = _split_name(name, driver, where)
        caps.setdefault(domain, {})[ident] = _capacity_value(value, where)
    return DeviceEnv(driver, attrs, caps, bool(allow_multiple_allocations))


# --------------------------------------------------------------------------------------- selectors

_STATUS_RE = re.compile(r"^[A-Z_]+: ")
_MISSING_KEY_RE = re.compile(r'Key not found in map : "(?P<key>[^"\\]*)"')
_CHECK_SUFFIX_RE = re.compile(r"\s*\[[A-Z_]+\]\s*$")


_RUNTIME_TYPE_NAMES = {"uint64": "Quantity", "bytes": "Semver", "int64": "int"}
_RUNTIME_TYPE_RE = re.compile(r"\b(uint64|bytes|int64)\b")


def _clean(message: str) -> str:
    """Drop the absl status code around a cel-cpp message ('INVALID_ARGUMENT: ... [INVALID_ARGUMENT]')."""
    message = _CHECK_SUFFIX_RE.sub("", _STATUS_RE.sub("", message.strip(), count=1)).strip()
    if message.startswith("No matching overloads"):
        # Name the types the user wrote, not the runtime stand-ins: (uint64).compareTo(...) is a Quantity.
        message = _RUNTIME_TYPE_RE.sub(lambda m: _RUNTIME_TYPE_NAMES[m[1]], message)
    return message


class Selector:
    """A compiled selector expression; :meth:`matches` evaluates it against one device."""

    __slots__ = ("_program", "_retry_domains", "_seed", "expression")

    def __init__(self, expression: str, program: Any, seed: frozenset[str], retry_domains: bool) -> None:
        self.expression = expression
        self._program = program
        self._seed = seed
        self._retry_domains = retry_domains

    def __repr__(self) -> str:
        return f"Selector({self.expression!r})"

    def matches(self, env: DeviceEnv) -> bool:
        """Evaluate against ``env``; raise :class:`CelEvalError` unless the result is a bool."""
        extra = self._seed
        for _ in range(_MAX_DOMAIN_RETRIES + 1):
            try:
                result = self._program.eval(env._activation(extra))
            except RuntimeError as exc:  # cel-cpp aborts, e.g. "Iteration budget exceeded"
                raise CelEvalError(self.expression, _clean(str(exc))) from None
            value = result.value()
            if type(value) is bool:
                return value
            kind = result.type()
            if kind != _T.ERROR:
                shown = (
                    "Quantity"
                    if kind == _T.UINT
                    else "Semver"
                    if kind == _T.BYTES
                    else f"{kind.name()} {result!r}"
                )
                raise CelEvalError(self.expression, f"must evaluate to a bool, got {shown}")
            message = str(value)
            missing = _MISSING_KEY_RE.search(message)
            if missing is None:
                raise CelEvalError(self.expression, _clean(message))
            key = missing["key"]
            if self._retry_domains and key not in env._domains and key not in extra:
                # Maybe an unknown domain, which Kubernetes treats as an empty map: try again with it added.
                extra = extra | {key}
                continue
            raise CelEvalError(
                self.expression,
                f"no such key {key!r} (test optional attributes with has() or .?{key}.orValue(...))",
            )
        raise CelEvalError(self.expression, _clean(message))


def _compile(expression: str) -> Selector:
    if not isinstance(expression, str):
        raise CelCompileError(str(expression), f"expected a string, got {type(expression).__name__}")
    if not expression.strip():
        raise CelCompileError(expression, "empty expression")
    size = len(expression.encode())
    if size > MAX_EXPRESSION_BYTES:
        raise CelCompileError(
            expression, f"expression is {size} bytes long, the limit is {MAX_EXPRESSION_BYTES}"
        )
    try:
        checked = _check_env().compile(expression)
    except RuntimeError as exc:
        raise CelCompileError(expression, _clean(str(exc))) from None
    result_type = checked.return_type()
    if result_type != _T.BOOL and result_type != _T.DYN:
        raise CelCompileError(expression, f"must evaluate to bool, not {result_type.name()}")
    domains, other_use, constant_calls = _scan(expression)
    for call in constant_calls:
        result = _eval_env().compile(call).eval()
        if result.type() == _T.ERROR:
            raise CelCompileError(expression, f"{call}: {_clean(str(result.value()))}")
    try:
        program = _eval_env().compile(expression)
    except RuntimeError as exc:  # would be a bug: whatever passes the checking environment should compile
        raise CelCompileError(expression, f"internal error: {_clean(str(exc))}") from None
    try:
        estimate = estimate_cost(program.serialize())
    except CostEstimateError as exc:  # would be a bug in the decoder: refuse rather than run blind
        raise CelCompileError(expression, f"internal error estimating the cost: {exc}") from None
    if estimate.cost > MAX_ESTIMATED_COST:
        raise CelCompileError(
            expression,
            f"estimated cost {estimate.cost} exceeds the limit of {MAX_ESTIMATED_COST} "
            "(values that grow at every step, or large nested loops)",
        )
    return Selector(expression, program, frozenset() if other_use else domains, retry_domains=other_use)


@functools.lru_cache(maxsize=4096)
def _compile_cached(expression: str) -> Selector | CelCompileError:
    try:
        return _compile(expression)
    except CelCompileError as exc:
        return exc


def compile_selector(expression: str) -> Selector:
    """Compile a selector expression, or return the cached result; raise :class:`CelCompileError`.

    The expression is refused, as the Kubernetes API server would refuse it, when it does not parse, does
    not type-check (``device.capacity['d'].memory > 5``), cannot return a bool, is longer than 10 KiB, or
    passes an invalid constant to ``quantity()``, ``semver()`` or ``matches()``.
    """
    if not isinstance(expression, str):
        raise CelCompileError(str(expression), f"expected a string, got {type(expression).__name__}")
    outcome = _compile_cached(expression)
    if isinstance(outcome, CelCompileError):
        # A fresh exception per raise: re-raising the cached one would grow its traceback forever.
        raise CelCompileError(outcome.expression, outcome.message)
    return outcome
