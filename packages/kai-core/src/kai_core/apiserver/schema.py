"""Validate custom resources against their CRD's ``openAPIV3Schema`` the way the API server does.

A CRD schema is OpenAPI 3.0 with Kubernetes extensions, which is close to JSON Schema draft 4 but not
the same. :class:`CrdValidator` rewrites the schema once into a draft-4 schema that jsonschema can
check with the API server's meaning, builds one ``Draft4Validator`` for it, and reuses it for every
write. The rewrites:

* ``nullable: true`` becomes ``type: [T, "null"]`` (and ``null`` joins an ``enum``).
* ``x-kubernetes-int-or-string: true`` becomes ``anyOf: [{type: integer}, {type: string}]``.
* Strict field validation: where ``x-kubernetes-preserve-unknown-fields`` is absent, an object schema
  (``type: object`` or ``properties``) without ``additionalProperties`` refuses unknown fields. The API
  server would prune them (or refuse them under ``fieldValidation=Strict``); refusing is what catches
  typos. The root always allows ``apiVersion``, ``kind`` and ``metadata``; the root ``metadata`` is
  ObjectMeta, which the store checks separately, so its schema (usually just ``type: object``) is
  kept lenient. ``x-kubernetes-embedded-resource`` objects likewise allow those three fields.
* ``format``: ``int32``/``int64`` are range-checked, ``date-time``, ``date``, ``uuid`` and ``byte``
  are checked; other formats are ignored, as the API server ignores formats it does not know.
* ``x-kubernetes-list-type: set`` refuses duplicate items and ``map`` refuses two items with the
  same ``x-kubernetes-list-map-keys``.
* ``pattern`` is matched by RE2, the engine whose syntax and meaning Go's ``regexp`` (the API
  server's) has: linear time whatever the pattern, ``$`` the end of the text, ASCII ``\\d``; a CRD
  whose pattern RE2 refuses is refused, as the API server refuses it.

``enum``, ``required``, ``minimum``/``maximum``, ``maxLength``, ``pattern``, ``items`` and
``additionalProperties`` (maps) are plain JSON Schema and behave as on the API server.

Not checked: ``x-kubernetes-validations`` (CEL rules, including transition rules like
``self == oldSelf``, which need the old object); the store must enforce any such rule it relies on,
e.g. an immutable spec.

Validation is the hot path (every write of a custom resource), so besides the jsonschema validator
each :class:`CrdValidator` compiles a plain-Python predicate from the same converted schema that only
answers valid/invalid; jsonschema runs only for invalid objects, to build the messages. For a
BindRequest that is roughly 15-35 µs instead of 200 µs per call.

Defaults are not validation: the API server prunes ``null`` from non-nullable fields and fills in
schema ``default`` values when it decodes a request, then validates. :meth:`CrdValidator.apply_defaults`
(and :func:`apply_defaults`) does that step; callers should run it before :meth:`CrdValidator.validate`
on create and update.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import re2
import yaml
from jsonschema import ValidationError

from kai_core.api.crds import SchemaError, builtin_crd_paths, crd_path, crd_versions, load_crd, storage_version
from kai_core.api.errors import short_repr, shorten

__all__ = [
    "CrdValidator",
    "SchemaError",
    "apply_defaults",
    "builtin_crd_paths",
    "crd_path",
    "crd_to_jsonschema",
    "crd_versions",
    "load_crd",
]

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
_ROOT_FIELDS = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
_JUNCTORS = ("allOf", "anyOf", "oneOf")
_MAX_MESSAGE = 300


# --------------------------------------------------------------------------------------------------
# Schema conversion


def crd_to_jsonschema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite a CRD ``openAPIV3Schema`` (the root of a custom resource) into a draft-4 JSON Schema.

    See the module docstring for the rewrites. Descriptions and defaults are dropped (they do not
    validate); Kubernetes extension keys are kept, two of them are read by the validator's extra
    keywords.
    """
    return _convert(schema, strict=True, root=True, junctor=False)


def _convert(node: Mapping[str, Any], *, strict: bool, root: bool, junctor: bool) -> dict[str, Any]:
    """Convert one schema node; ``strict`` False keeps unknown fields allowed (root metadata)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "default", "example", "externalDocs", "nullable"):
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {
                name: _convert(sub, strict=not (root and name == "metadata"), root=False, junctor=junctor)
                for name, sub in value.items()
                if isinstance(sub, Mapping)
            }
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = _convert(value, strict=True, root=False, junctor=junctor or key == "not")
        elif key in _JUNCTORS and isinstance(value, list):
            out[key] = [
                _convert(sub, strict=True, root=False, junctor=True)
                for sub in value
                if isinstance(sub, Mapping)
            ]
        else:
            out[key] = value

    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if out.get("anyOf") != _INT_OR_STRING:
            if "anyOf" in out:
                out.setdefault("allOf", []).append({"anyOf": out["anyOf"]})
            out["anyOf"] = [dict(t) for t in _INT_OR_STRING]
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "anyOf" in out and node.get("x-kubernetes-int-or-string"):
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]

    is_object = out.get("type") == "object" or (isinstance(out.get("type"), list) and "object" in out["type"])
    if (
        strict
        and not junctor
        and not preserve
        and "additionalProperties" not in out
        and (is_object or "properties" in out)
    ):
        out["additionalProperties"] = False
    if (root or node.get("x-kubernetes-embedded-resource")) and not junctor:
        props = out.setdefault("properties", {})
        for name, sub in _ROOT_FIELDS.items():
            props.setdefault(name, dict(sub))
    return out


# --------------------------------------------------------------------------------------------------
# Extra keywords and message rewrites for the validator


def _short(value: Any) -> str:
    return short_repr(value, 80)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# used with fullmatch (no "$", which would also match before a final newline)
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _check_date_time(value: str) -> bool:
    if not _DATE_TIME.fullmatch(value):
        return False
    text = value.upper().replace("Z", "+00:00")
    date, _, rest = text.replace(" ", "T").partition("T")
    clock = re.sub(r"\.[0-9]+", "", rest)
    try:
        _dt.datetime.fromisoformat(f"{date}T{clock}")
    except ValueError:
        return False
    return True


def _check_date(value: str) -> bool:
    try:
        return bool(_DATE.fullmatch(value)) and bool(_dt.date.fromisoformat(value))
    except ValueError:
        return False


def _check_byte(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _format_problem(fmt: str, value: Any) -> str | None:
    """Why ``value`` does not have format ``fmt``, or None when it does (or the format is unchecked)."""
    if fmt == "int32" and _is_int(value) and not -(2**31) <= value < 2**31:
        return f"{value} is out of range for int32"
    if fmt == "int64" and _is_int(value) and not -(2**63) <= value < 2**63:
        return f"{value} is out of range for int64"
    if not isinstance(value, str):
        return None
    if fmt in ("date-time", "datetime") and not _check_date_time(value):
        return f"{_short(value)} is not an RFC 3339 date-time"
    if fmt == "date" and not _check_date(value):
        return f"{_short(value)} is not a date (YYYY-MM-DD)"
    if fmt == "uuid" and not _UUID.fullmatch(value):
        return f"{_short(value)} is not a UUID"
    if fmt == "byte" and not _check_byte(value):
        return f"{_short(value)} is not base64-encoded data"
    return None


def _kw_format(
    validator: Any, fmt: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    problem = _format_problem(fmt, instance) if isinstance(fmt, str) else None
    if problem:
        yield ValidationError(problem)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print every refused pattern on stderr
#: values up to this long have their match remembered (the same few recur on every write)
_MEMO_VALUE_CHARS = 128


class PatternError(ValueError):
    """A ``pattern`` that Go's regexp (RE2 syntax) does not accept; the message is the API server's."""


@functools.lru_cache(maxsize=1024)
def _compile_pattern(pattern: str) -> Callable[[str], bool]:
    r"""Whether ``pattern`` matches somewhere in a string, as the API server's Go ``regexp`` decides.

    The engine is RE2 (Go's regexp has its syntax and guarantees): time linear in the string's length
    whatever the pattern, so ``^(a+)+$`` against ``"a" * 40 + "!"`` answers at once where Python's
    backtracking ``re`` would run for ever. The semantics are Go's too: ``$`` is the end of the text,
    ``\d`` and ``\w`` are ASCII, ``\pL`` and ``[[:alpha:]]`` work, and lookarounds, backreferences
    and ``\Z`` are refused. Raises :class:`PatternError` for such a pattern."""
    try:
        regexp = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise PatternError(f"must be a valid regular expression, but isn't: {shorten(detail)}") from None
    search = regexp.search

    @functools.lru_cache(maxsize=1024)
    def memo(value: str) -> bool:
        return search(value) is not None

    def matches(value: str) -> bool:
        return memo(value) if len(value) <= _MEMO_VALUE_CHARS else search(value) is not None

    return matches


def _kw_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not _compile_pattern(pattern)(instance):
        yield ValidationError(f"{_short(instance)} does not match {shorten(repr(pattern))}")


def _is_regex(value: object) -> bool:
    """The ``regex`` format of the JSON Schema meta-schema, in RE2's syntax (not Python's)."""
    if not isinstance(value, str):
        return True
    try:
        _compile_pattern(value)
    except PatternError:
        return False
    return True


_SCHEMA_FORMATS = jsonschema.FormatChecker(formats=())
_SCHEMA_FORMATS.checks("regex")(_is_regex)


def _pattern_problems(schema: Any, path: tuple = ()) -> Iterator[str]:
    """``path: problem`` for every ``pattern`` of a CRD schema that RE2 refuses, as the API server
    refuses the CRD (``must be a valid regular expression, but isn't: ...``)."""
    stack = [(schema, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, Mapping):
            pattern = node.get("pattern")
            if isinstance(pattern, str):
                try:
                    _compile_pattern(pattern)
                except PatternError as exc:
                    yield f"{_format_path([*at, 'pattern'])}: Invalid value: {shorten(repr(pattern))}: {exc}"
            stack.extend((v, (*at, k)) for k, v in node.items() if isinstance(v, (Mapping, list)))
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(node))


def _kw_type(
    validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    names = [types] if isinstance(types, str) else list(types)
    if not any(validator.is_type(instance, t) for t in names):
        yield ValidationError(f"{_short(instance)} is not of type {', '.join(repr(t) for t in names)}")


def _enum_ok(instance: Any, enums: Sequence[Any]) -> bool:
    """Whether ``instance`` is one of ``enums`` (True and 1 are different values, as in JSON)."""
    return any(instance == a and isinstance(instance, bool) == isinstance(a, bool) for a in enums)


def _kw_enum(
    validator: Any, enums: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not _enum_ok(instance, enums):
        yield ValidationError(f"{_short(instance)} is not one of {enums!r}")


def _kw_required(
    validator: Any, required: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for name in required:
            if name not in instance:
                yield ValidationError("required field is missing", path=[name])


_DRAFT4_ADDITIONAL = jsonschema.Draft4Validator.VALIDATORS["additionalProperties"]
_DRAFT4_ANY_OF = jsonschema.Draft4Validator.VALIDATORS["anyOf"]


def _kw_additional(
    validator: Any, extra: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if extra is False:
        if isinstance(instance, dict):
            known = schema.get("properties", {})
            for name in instance:
                if name not in known:
                    yield ValidationError("unknown field", path=[name])
        return
    yield from _DRAFT4_ADDITIONAL(validator, extra, instance, schema)


def _kw_any_of(
    validator: Any, any_of: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if schema.get("x-kubernetes-int-or-string"):
        if (
            _is_int(instance)
            or isinstance(instance, str)
            or (instance is None and {"type": "null"} in any_of)
        ):
            return
        yield ValidationError(f"{_short(instance)} is not an integer or a string")
        return
    yield from _DRAFT4_ANY_OF(validator, any_of, instance, schema)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return (type(value).__name__, value) if isinstance(value, bool) else value


def _kw_list_type(
    validator: Any, list_type: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``x-kubernetes-list-type``: ``set`` items and ``map`` keys must be unique, as the API server checks."""
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    keys = list(schema.get("x-kubernetes-list-map-keys") or [])
    seen: set[Any] = set()
    for index, item in enumerate(instance):
        if list_type == "set":
            ident = _hashable(item)
            label = _short(item)
        elif isinstance(item, dict) and keys:
            ident = tuple(_hashable(item.get(k)) for k in keys)
            label = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
        else:
            continue
        if ident in seen:
            yield ValidationError(f"duplicate entry ({label})", path=[index])
        seen.add(ident)


_KaiValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {
        "additionalProperties": _kw_additional,
        "anyOf": _kw_any_of,
        "enum": _kw_enum,
        "format": _kw_format,
        "pattern": _kw_pattern,
        "required": _kw_required,
        "type": _kw_type,
        "x-kubernetes-list-type": _kw_list_type,
    },
)


# A fast path for the common case, a valid object: a tree of closures compiled from the converted
# schema that only answers valid/invalid. Structural keywords (type, required, properties,
# additionalProperties, items, the junctors) are re-implemented with the same meaning as above;
# every other keyword calls the validator's own keyword function, so its meaning cannot drift.
# Invalid objects go through jsonschema for the messages. A schema using a keyword this does not
# cover (e.g. $ref, patternProperties) gets no fast path.

_Check = Callable[[Any], bool]
_UNSUPPORTED = frozenset({"$ref", "patternProperties", "additionalItems", "dependencies"})
_STRUCTURAL = frozenset(
    {"type", "required", "properties", "additionalProperties", "items", "not", *_JUNCTORS}
)
_TYPE_CHECKS: dict[str, _Check] = {
    "integer": _is_int,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _compile_fast(schema: Mapping[str, Any], validator: Any) -> _Check | None:
    """Compile ``schema`` into a predicate meaning "jsonschema reports no error"; None if unsupported."""
    checks: list[_Check] = []
    keywords = validator.VALIDATORS
    for key, value in schema.items():
        if key in _UNSUPPORTED:
            return None
        if key not in keywords or key in _STRUCTURAL:
            continue
        check = _direct_check(key, value)
        if check is None:
            check = _leaf_check(keywords[key], validator, value, schema)
        if check is not _ALWAYS:
            checks.append(check)

    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if any(t not in _TYPE_CHECKS for t in names):
            return None
        type_checks = [_TYPE_CHECKS[t] for t in names]
        checks.insert(0, type_checks[0] if len(type_checks) == 1 else _any_check(type_checks))

    object_check = _object_check(schema, validator)
    if object_check is None:
        return None
    if object_check is not _ALWAYS:
        checks.append(object_check)
    items = schema.get("items")
    if items is not None:
        if not isinstance(items, Mapping):
            return None
        item_check = _compile_fast(items, validator)
        if item_check is None:
            return None
        checks.append(_items_check(item_check))
    for key in (*_JUNCTORS, "not"):
        if key not in schema:
            continue
        subs = [schema[key]] if key == "not" else list(schema[key])
        compiled_subs = [_compile_fast(sub, validator) for sub in subs]
        if any(c is None for c in compiled_subs):
            return None
        checks.append(_junctor_check(key, compiled_subs))  # type: ignore[arg-type]

    if not checks:
        return _ALWAYS
    if len(checks) == 1:
        return checks[0]
    return _all_check(checks)


def _object_check(schema: Mapping[str, Any], validator: Any) -> _Check | None:
    """required + properties + additionalProperties in one pass over the object's fields."""
    required = tuple(schema.get("required") or ())
    props: dict[str, _Check] = {}
    for name, sub in (schema.get("properties") or {}).items():
        compiled = _compile_fast(sub, validator)
        if compiled is None:
            return None
        props[name] = compiled
    extra = schema.get("additionalProperties", True)
    if isinstance(extra, Mapping):
        extra_check: _Check | None = _compile_fast(extra, validator)
        if extra_check is None:
            return None
    elif extra is False:
        extra_check = None
    else:
        extra_check = _ALWAYS
    if not required and not props and extra_check is _ALWAYS:
        return _ALWAYS

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            sub = props.get(name, extra_check)
            if sub is None or not sub(item):
                return False
        return True

    return check


def _all_check(checks: Sequence[_Check]) -> _Check:
    checks = tuple(checks)

    def check(value: Any) -> bool:
        for one in checks:
            if not one(value):
                return False
        return True

    return check


def _any_check(checks: Sequence[_Check]) -> _Check:
    checks = tuple(checks)

    def check(value: Any) -> bool:
        for one in checks:
            if one(value):
                return True
        return False

    return check


def _items_check(item_check: _Check) -> _Check:
    def check(value: Any) -> bool:
        if isinstance(value, list):
            for item in value:
                if not item_check(item):
                    return False
        return True

    return check


def _always(value: Any) -> bool:
    return True


_ALWAYS: _Check = _always


def _direct_check(key: str, value: Any) -> _Check | None:
    """Inline versions of the commonest leaf keywords (same helpers as the keyword functions)."""
    if key == "enum" and isinstance(value, list):
        if value and all(isinstance(a, str) for a in value):  # the common case: a set lookup
            allowed = frozenset(value)
            return lambda v: isinstance(v, str) and v in allowed
        return lambda v: _enum_ok(v, value)
    if key == "pattern" and isinstance(value, str):
        matches = _compile_pattern(value)
        return lambda v: not isinstance(v, str) or matches(v)
    if key == "format":
        return lambda v: _format_problem(value, v) is None if isinstance(value, str) else True
    if key == "minLength" and _is_int(value):
        return lambda v: not isinstance(v, str) or len(v) >= value
    if key == "maxLength" and _is_int(value):
        return lambda v: not isinstance(v, str) or len(v) <= value
    if key == "x-kubernetes-list-type" and value not in ("set", "map"):
        return _ALWAYS
    return None


def _leaf_check(keyword: Any, validator: Any, value: Any, schema: Mapping[str, Any]) -> _Check:
    return lambda v: next(iter(keyword(validator, value, v, schema)), None) is None


def _junctor_check(key: str, subs: list[_Check]) -> _Check:
    if key == "allOf":
        return _all_check(subs)
    if key == "anyOf":
        return _any_check(subs)
    if key == "oneOf":
        return lambda v: sum(1 for c in subs if c(v)) == 1
    return lambda v: not subs[0](v)


_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _format_path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _SIMPLE_KEY.match(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{part}]"
    return text or "<root>"


def _sort_key(parts: Sequence[Any], message: str) -> tuple[Any, ...]:
    return tuple((1, p, "") if isinstance(p, int) else (0, 0, str(p)) for p in parts), message


# --------------------------------------------------------------------------------------------------
# Defaults


@dataclass(slots=True)
class _DefaultsNode:
    """What to do at one object node when applying defaults (precompiled from the schema)."""

    defaults: dict[str, Any] = field(default_factory=dict)  # property -> default value
    drop_null: tuple[str, ...] = ()  # non-nullable properties without a default: null is pruned
    keep_null: frozenset[str] = frozenset()  # nullable properties with a default: null is kept
    children: dict[str, _DefaultsNode] = field(default_factory=dict)  # property -> plan for its value
    additional: _DefaultsNode | None = None  # plan for every value of a map
    items: _DefaultsNode | None = None  # plan for every item, when this node is an array
    # what happens to a null map value / array item whose schema is not nullable: "default" replaces it
    # with member_default; "prune" removes it (maps only; a null array item is left for validation)
    member_default: Any = None
    member_null: str = "keep"  # "keep", "default" or "prune"
    member_of: str = ""  # "list" (items) or "map" (additionalProperties)


def _compile_defaults(schema: Mapping[str, Any], *, root: bool = False) -> _DefaultsNode | None:
    """Precompile the defaulting walk; None where nothing below can change."""
    node = _DefaultsNode()
    useful = False
    for key in ("items", "additionalProperties"):
        member = schema.get(key)
        if not isinstance(member, Mapping):
            continue
        plan = _compile_defaults(member)
        if key == "items":
            node.items = plan
        else:
            node.additional = plan
        if not member.get("nullable"):
            node.member_of = "list" if key == "items" else "map"
            if "default" in member:
                node.member_null, node.member_default = "default", member["default"]
            elif key == "additionalProperties":
                node.member_null = "prune"
        useful = useful or plan is not None or node.member_null != "keep"
    drop: list[str] = []
    keep: set[str] = set()
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping) or (root and name == "metadata"):
            continue
        if "default" in sub:
            node.defaults[name] = sub["default"]
            if sub.get("nullable"):
                keep.add(name)
        elif not sub.get("nullable"):
            drop.append(name)
        child = _compile_defaults(sub)
        if child is not None:
            node.children[name] = child
    node.drop_null = tuple(drop)
    node.keep_null = frozenset(keep)
    useful = useful or bool(node.defaults or drop or node.children)
    return node if useful else None


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON-like data, several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


def _apply(node: _DefaultsNode, value: Any) -> None:
    if isinstance(value, list):
        if node.member_null == "default" and node.member_of == "list":
            for index, item in enumerate(value):
                if item is None:
                    value[index] = _json_copy(node.member_default)
        if node.items is not None:
            for item in value:
                _apply(node.items, item)
        return
    if not isinstance(value, dict):
        return
    for name in node.drop_null:
        if name in value and value[name] is None:
            del value[name]
    for name, default in node.defaults.items():
        if name not in value or (value[name] is None and name not in node.keep_null):
            value[name] = _json_copy(default)
    for name, child in node.children.items():
        sub = value.get(name)
        if sub is not None:
            _apply(child, sub)
    if node.member_null != "keep" and node.member_of == "map":
        for name in [k for k, v in value.items() if v is None and k not in node.children]:
            if node.member_null == "default":
                value[name] = _json_copy(node.member_default)
            else:
                del value[name]
    if node.additional is not None:
        for sub in value.values():
            if sub is not None:
                _apply(node.additional, sub)


def apply_defaults(schema: Mapping[str, Any], obj: Any) -> Any:
    """Return a copy of ``obj`` with the schema's defaults applied, as the API server does on decode.

    ``schema`` is a CRD ``openAPIV3Schema`` (the root of the object). For every object present in
    ``obj`` (including array items and map values), a property that has a ``default`` and is missing,
    or is null and not ``nullable``, gets a copy of the default; defaults inside defaults are applied
    too. A null property that is neither nullable nor defaulted is removed (the API server prunes it).
    Absent parents are not created. ``obj`` itself is not changed. Data of the wrong shape is left
    for validation to report.
    """
    plan = _compile_defaults(schema, root=True)
    out = _json_copy(obj)
    if plan is not None:
        _apply(plan, out)
    return out


# --------------------------------------------------------------------------------------------------
# The validator


class CrdValidator:
    """Validates and defaults custom resources of one CRD version; build it once, reuse it.

    Attributes: ``group``, ``kind``, ``plural``, ``singular``, ``short_names``, ``namespaced``,
    ``versions`` (served), ``version`` (the one this validator checks), ``has_status`` (status
    subresource), ``api_version`` (``group/version``), ``name`` (the CRD's name), ``printer_columns``
    (``additionalPrinterColumns``) and ``schema`` (the original ``openAPIV3Schema``).
    ``x-kubernetes-validations`` (CEL) rules are not evaluated; see the module docstring.
    """

    def __init__(self, crd: Mapping[str, Any], version: str | None = None) -> None:
        crd = load_crd(crd)
        spec = crd["spec"]
        names = spec["names"]
        self.name: str = crd["metadata"]["name"]
        self.group: str = spec["group"]
        self.kind: str = names["kind"]
        self.plural: str = names["plural"]
        self.singular: str = names.get("singular") or self.kind.lower()
        self.short_names: list[str] = list(names.get("shortNames") or [])
        self.namespaced: bool = spec["scope"] == "Namespaced"
        self.versions: list[str] = crd_versions(crd)
        self.version: str = version if version is not None else storage_version(crd)
        entry = next((v for v in spec["versions"] if v.get("name") == self.version), None)
        if entry is None or self.version not in self.versions:
            served = ", ".join(self.versions)
            raise SchemaError(
                f"CRD {self.name}: version {self.version!r} is not served (served: {served})",
                ref=f"CRD {self.name}",
            )
        self.api_version: str = f"{self.group}/{self.version}"
        self.has_status: bool = "status" in (entry.get("subresources") or {})
        self.printer_columns: list[dict[str, Any]] = list(entry.get("additionalPrinterColumns") or [])
        self.schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
        converted = crd_to_jsonschema(self.schema)
        bad_patterns = sorted(_pattern_problems(self.schema))
        if bad_patterns:
            raise SchemaError(
                f"CRD {self.name} {self.version}: invalid openAPIV3Schema at " + "; ".join(bad_patterns),
                ref=f"CRD {self.name}",
            )
        try:
            _KaiValidator.check_schema(converted, format_checker=_SCHEMA_FORMATS)
        except jsonschema.SchemaError as exc:
            where = _format_path(list(exc.absolute_path))
            raise SchemaError(
                f"CRD {self.name} {self.version}: invalid openAPIV3Schema at {where}: {exc.message}",
                ref=f"CRD {self.name}",
            ) from None
        self._validator = _KaiValidator(converted)
        self._fast = _compile_fast(converted, self._validator)
        self._defaults = _compile_defaults(self.schema, root=True)

    def __repr__(self) -> str:
        return f"CrdValidator({self.name}, {self.version})"

    def errors(self, obj: Any) -> list[str]:
        """Every problem with ``obj`` as ``"path: problem"`` strings, sorted by path; empty if valid.

        Besides the schema, an ``apiVersion`` or ``kind`` that names another resource is a problem.
        """
        found: list[tuple[tuple[Any, ...], str, str]] = []
        slow = self._fast is None or not self._fast(obj)
        for error in self._validator.iter_errors(obj) if slow else ():
            parts = list(error.absolute_path)
            message = error.message
            if len(message) > _MAX_MESSAGE:
                message = message[: _MAX_MESSAGE - 3] + "..."
            found.append((_sort_key(parts, message), _format_path(parts), message))
        if isinstance(obj, dict):
            api_version, kind = obj.get("apiVersion"), obj.get("kind")
            if isinstance(api_version, str) and api_version != self.api_version:
                msg = f"{api_version!r} does not match {self.api_version!r}"
                found.append((_sort_key(["apiVersion"], msg), "apiVersion", msg))
            if isinstance(kind, str) and kind != self.kind:
                msg = f"{kind!r} does not match {self.kind!r}"
                found.append((_sort_key(["kind"], msg), "kind", msg))
        found.sort(key=lambda f: f[0])
        out: list[str] = []
        for _, path, message in found:
            line = f"{path}: {message}"
            if not out or out[-1] != line:
                out.append(line)
        return out

    def validate(self, obj: Any) -> None:
        """Raise :class:`SchemaError` with all problems (joined by ``"; "``, sorted by path) if invalid."""
        problems = self.errors(obj)
        if problems:
            raise SchemaError(problems, ref=self.object_ref(obj))

    def apply_defaults(self, obj: Any) -> Any:
        """Return a copy of ``obj`` with schema defaults filled in; see :func:`apply_defaults`."""
        return self.apply_defaults_in_place(_json_copy(obj))

    def apply_defaults_in_place(self, obj: Any) -> Any:
        """Fill in ``obj``'s schema defaults in place and return it: for a caller that owns ``obj``
        (the embedded store's copy of a request), where a copy would be thrown away."""
        if self._defaults is not None:
            _apply(self._defaults, obj)
        return obj

    def object_ref(self, obj: Any) -> str:
        """``"<Kind> <namespace>/<name>"`` (or ``"<Kind> <name>"``) for error messages."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name") or meta.get("generateName") or "<unnamed>"
        namespace = meta.get("namespace")
        return f"{self.kind} {namespace}/{name}" if namespace and self.namespaced else f"{self.kind} {name}"
