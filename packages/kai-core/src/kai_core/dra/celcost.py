"""A static upper bound on what evaluating a CEL selector can cost, so a hostile one is refused.

cel-expr-python has no runtime cost limit and its evaluation cannot be interrupted, so a selector
such as ``cel.bind(a, s + s, cel.bind(b, a + a, ...))`` or a chain of ``replace()`` calls, whose
values double at every step, would stall the scheduler or exhaust memory the first time it runs.
The Kubernetes API server refuses such selectors with a static cost estimate; this module does the
same kind of estimate on the checked expression, before the expression is ever evaluated.

The estimate walks the checked abstract syntax tree (decoded from the ``cel.expr.CheckedExpr``
protobuf that cel-expr-python serializes; no protobuf library is needed) and tracks two bounds per
sub-expression:

* an abstract *size*: the length of a string or bytes value, the number of elements (counted
  recursively) of a list or map, 1 for scalars; with the size of one element, for indexing and for
  comprehensions;
* a *cost*: roughly the number of elementary steps (characters copied or compared, iterations).

Device inputs have API-bounded sizes (a string attribute is at most 64 characters, a device at most
32 attributes and capacities). Comprehensions (the ``all``, ``exists``, ``exists_one``, ``map``,
``filter`` macros and ``cel.bind``) run at most as many times as their range has elements, and
never more than cel-cpp's budget of 10,000 iterations per evaluation. Every bound is on the safe
side: the estimate may be far above the real cost, never below.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_ESTIMATED_COST", "CostEstimate", "CostEstimateError", "estimate_cost"]

#: The most an expression may cost, in the same spirit as the Kubernetes runtime cost limit for
#: device selectors (1,000,000 units, roughly 0.1 s of work).
MAX_ESTIMATED_COST = 1_000_000

# cel-cpp stops an evaluation after this many comprehension iterations in total.
_ITERATION_BUDGET = 10_000
# API bounds on device data.
_MAX_STRING_ATTRIBUTE = 64  # characters of a string (or version) attribute
_MAX_LIST_ATTRIBUTE = 64  # elements of a list attribute (alpha)
_MAX_DRIVER_NAME = 63
_MAX_ENTRIES = 32  # attributes and capacities of one device
_DOMAIN_NAME = 63
# Anything beyond this is reported as "too large" whatever the cost model says.
_HUGE = 1 << 62


@dataclass(frozen=True, slots=True)
class _Value:
    """Abstract value, as upper bounds: ``size`` of the whole value (string length, or elements of
    a list or map counted recursively, 1 for a scalar), ``text`` the length it has if it is a string,
    ``count`` how many elements one iteration over it visits, and the abstract ``element``."""

    size: int
    text: int = 1
    count: int = 1
    element: _Value | None = None

    def item(self) -> _Value:
        # An element is never larger than its container.
        return self.element if self.element is not None else _Value(self.size, self.text, self.count)


def _text(length: int) -> _Value:
    return _Value(length, length, length)


def _join(a: _Value, b: _Value) -> _Value:
    """A value that may be either ``a`` or ``b``."""
    if a.element is None or b.element is None:
        element = a.element or b.element
    else:
        element = _join(a.element, b.element)
    return _Value(max(a.size, b.size), max(a.text, b.text), max(a.count, b.count), element)


_SCALAR = _Value(1)
# A string attribute, or (alpha) a list attribute of such strings.
_ATTRIBUTE = _Value(
    _MAX_STRING_ATTRIBUTE * _MAX_LIST_ATTRIBUTE,
    _MAX_STRING_ATTRIBUTE,
    _MAX_LIST_ATTRIBUTE,
    _text(_MAX_STRING_ATTRIBUTE),
)
_DOMAIN_MAP = _Value(_MAX_ENTRIES * (_ATTRIBUTE.size + _DOMAIN_NAME), 1, _MAX_ENTRIES, _ATTRIBUTE)
_DEVICE_MAP = _Value(_MAX_ENTRIES * (_DOMAIN_MAP.size + _DOMAIN_NAME), 1, _MAX_ENTRIES, _DOMAIN_MAP)
_DEVICE_VARIABLES = {
    "device.driver": _text(_MAX_DRIVER_NAME),
    "device.attributes": _DEVICE_MAP,
    "device.capacity": _DEVICE_MAP,
    "device.allowMultipleAllocations": _SCALAR,
}


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """The result of :func:`estimate_cost`: ``cost`` in abstract units, ``size`` of the result."""

    cost: int
    size: int


class CostEstimateError(ValueError):
    """The serialized expression could not be read (a bug, or an unexpected cel-expr-python format)."""


# ------------------------------------------------------------------------------------ protobuf


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise CostEstimateError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _fields(data: bytes) -> list[tuple[int, object]]:
    """Decode one protobuf message into (field number, value) pairs, in order."""
    out: list[tuple[int, object]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: object
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise CostEstimateError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def _first(fields: list[tuple[int, object]], number: int) -> object | None:
    for n, value in fields:
        if n == number:
            return value
    return None


# cel.expr.Expr field numbers.
_CONST, _IDENT, _SELECT, _CALL, _LIST, _STRUCT, _COMPREHENSION = 3, 4, 5, 6, 7, 8, 9


# ------------------------------------------------------------------------------------ estimate


class _Estimator:
    def __init__(self) -> None:
        self.scopes: list[dict[str, _Value]] = []
        # How many iterations enclosing comprehensions may run: bounds nested loops together.
        self.iterations = 1

    def lookup(self, name: str) -> _Value:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return _DEVICE_VARIABLES.get(name, _SCALAR)

    def expr(self, data: bytes) -> tuple[_Value, int]:
        for number, value in _fields(data):
            if not isinstance(value, bytes):
                continue
            if number == _CONST:
                return self.const(value)
            if number == _IDENT:
                name = _first(_fields(value), 1)
                return self.lookup(bytes(name).decode() if isinstance(name, bytes) else ""), 1
            if number == _SELECT:
                fields = _fields(value)
                operand, cost = self.expr(_bytes(_first(fields, 1)))
                if _first(fields, 3):  # has(): a presence test
                    return _SCALAR, cost + 1
                return operand.item(), cost + 1
            if number == _CALL:
                return self.call(_fields(value))
            if number == _LIST:
                return self.collection([v for n, v in _fields(value) if n == 1 and isinstance(v, bytes)])
            if number == _STRUCT:
                parts: list[bytes] = []
                for n, entry in _fields(value):
                    if n == 2 and isinstance(entry, bytes):
                        parts.extend(v for k, v in _fields(entry) if k in (3, 4) and isinstance(v, bytes))
                return self.collection(parts)
            if number == _COMPREHENSION:
                return self.comprehension(_fields(value))
        return _SCALAR, 1

    @staticmethod
    def const(data: bytes) -> tuple[_Value, int]:
        for number, value in _fields(data):
            if number in (6, 7) and isinstance(value, bytes):  # string, bytes
                return _text(max(1, len(value))), 1
        return _SCALAR, 1

    def collection(self, parts: list[bytes]) -> tuple[_Value, int]:
        size, cost, element = len(parts), 1, None
        for part in parts:
            value, part_cost = self.expr(part)
            size += value.size
            cost += part_cost
            element = value if element is None else _join(element, value)
        size = max(1, size)
        return _Value(size, size, max(1, len(parts)), element), cost + size

    def call(self, fields: list[tuple[int, object]]) -> tuple[_Value, int]:
        name = bytes(_bytes(_first(fields, 2))).decode()
        target = _first(fields, 1)
        args = [v for n, v in fields if n == 3 and isinstance(v, bytes)]
        if isinstance(target, bytes):
            args.insert(0, target)
        values: list[_Value] = []
        cost = 1
        for arg in args:
            value, arg_cost = self.expr(arg)
            values.append(value)
            cost += arg_cost
        if not values:
            return _SCALAR, cost
        first = values[0]
        texts = [v.text for v in values]
        if name == "_+_":  # string, bytes or list concatenation (or arithmetic, all small)
            element = None
            for v in values:
                if v.element is not None:
                    element = v.element if element is None else _join(element, v.element)
            size = sum(v.size for v in values)
            joined = _Value(size, sum(texts), sum(v.count for v in values), element)
            return joined, cost + size
        if name in ("_[_]", "_[?_]", "_?._"):
            return first.item(), cost + 1
        if name in ("value", "orValue", "dyn", "optional.of", "optional.ofNonZeroValue", "_?_:_"):
            result = values[1] if name == "_?_:_" and len(values) == 3 else first
            for v in values[1:]:
                result = _join(result, v)
            return result, cost + 1
        if name == "replace" and len(values) >= 3:
            # Every character may be replaced, and an empty pattern inserts between characters.
            length = texts[0] * max(1, texts[2]) + texts[2]
            return _text(length), cost + length + texts[0] * texts[1]
        if name == "join":
            separator = texts[1] if len(texts) > 1 else 0
            length = first.size + first.count * separator
            return _text(length), cost + length
        if name == "split":
            return _Value(texts[0] + 1, texts[0], texts[0] + 1, _text(texts[0])), cost + 2 * texts[0]
        if name == "format":
            length = texts[0] + 4 * sum(v.size for v in values[1:])
            return _text(length), cost + length
        if name in ("lowerAscii", "upperAscii", "trim", "reverse", "substring", "charAt", "quote", "string"):
            length = 2 * texts[0] + 32  # quote() may escape every character; string() of a number
            return _text(length), cost + length
        if name in ("matches", "contains", "startsWith", "endsWith", "indexOf", "lastIndexOf"):
            # RE2 and substring search: at worst text length times pattern length.
            return _SCALAR, cost + texts[0] * (texts[1] if len(texts) > 1 else 1) + 1
        if name in ("_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_"):
            return _SCALAR, cost + min(v.size for v in values) + 1
        if name in ("@in", "includes"):
            # One comparison per element of the list (a map lookup is cheaper still): ``x in list``,
            # ``attribute.includes(x)``.
            container, item = (values[-1], values[0]) if name == "@in" else (values[0], values[-1])
            return _SCALAR, cost + container.count * min(item.size, container.item().size) + 1
        # Logic, arithmetic, size(), conversions, quantity() and semver() helpers: scalar results
        # after looking at their inputs once.
        return _SCALAR, cost + sum(texts)

    def comprehension(self, fields: list[tuple[int, object]]) -> tuple[_Value, int]:
        iter_var = _name(_first(fields, 1))
        iter_var2 = _name(_first(fields, 8))
        accu_var = _name(_first(fields, 3))
        range_expr = _bytes(_first(fields, 2))
        range_value, cost = self.expr(range_expr)
        init, init_cost = self.expr(_bytes(_first(fields, 4)))
        cost += init_cost
        if _is_empty_list(range_expr):  # cel.bind(name, init, body): the body runs once, name = init
            self.scopes.append({accu_var: init})
            result, result_cost = self.expr(_bytes(_first(fields, 7)))
            self.scopes.pop()
            return result, cost + result_cost
        runs = max(1, min(range_value.count, _ITERATION_BUDGET // self.iterations))
        element = range_value.item()
        loop_scope = {iter_var: element}
        if iter_var2:
            loop_scope[iter_var2] = element
        # One step with the initial accumulator tells how much the accumulator grows per iteration
        # (the macros add at most one element a step); the final accumulator bounds every step.
        self.iterations *= runs
        self.scopes.append({**loop_scope, accu_var: init})
        first_step, _ = self.expr(_bytes(_first(fields, 6)))
        growth = max(0, first_step.size - init.size)
        final = _join(init, first_step)
        final = _Value(
            init.size + runs * growth,
            final.text,
            init.count + runs * max(0, first_step.count - init.count),
            final.element,
        )
        self.scopes[-1][accu_var] = final
        _, condition_cost = self.expr(_bytes(_first(fields, 5)))
        _, step_cost = self.expr(_bytes(_first(fields, 6)))
        self.scopes.pop()
        self.iterations //= runs
        cost += runs * (condition_cost + step_cost)
        self.scopes.append({accu_var: final})
        result, result_cost = self.expr(_bytes(_first(fields, 7)))
        self.scopes.pop()
        return result, cost + result_cost


def _bytes(value: object) -> bytes:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else b""


def _name(value: object) -> str:
    return bytes(value).decode() if isinstance(value, (bytes, bytearray)) else ""


def _is_empty_list(expr: bytes) -> bool:
    for number, value in _fields(expr):
        if number == _LIST:
            return not any(n == 1 for n, _ in _fields(_bytes(value)))
    return False


def estimate_cost(serialized: bytes) -> CostEstimate:
    """Estimate the cost of a checked expression, as returned by cel-expr-python's ``serialize()``.

    Raises :class:`CostEstimateError` when the bytes are not a serialized ``CheckedExpr``.
    """
    top = _fields(serialized)  # google.protobuf.Any: type_url = 1, value = 2
    checked = _first(top, 2)
    if not isinstance(checked, bytes):
        raise CostEstimateError("not a serialized CheckedExpr")
    expr = _first(_fields(checked), 4)
    if not isinstance(expr, bytes):
        raise CostEstimateError("CheckedExpr has no expression")
    value, cost = _Estimator().expr(expr)
    return CostEstimate(cost=min(cost, _HUGE), size=min(value.size, _HUGE))
