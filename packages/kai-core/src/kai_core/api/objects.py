"""Small helpers over Kubernetes JSON objects: copying, metadata, label and field selectors."""

from __future__ import annotations

import datetime as _dt
import random
import re
import time
from collections.abc import Callable, Iterable

from kai_core.api.errors import BadRequest

# The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_rng = random.Random()


def clone(obj):
    """Deep copy of a JSON-like value; several times faster than copy.deepcopy for API objects."""
    if isinstance(obj, dict):
        return {k: clone(v) if isinstance(v, (dict, list)) else v for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone(v) if isinstance(v, (dict, list)) else v for v in obj]
    return obj


def random_suffix(n: int = 5) -> str:
    return "".join(_rng.choice(_SUFFIX_ALPHABET) for _ in range(n))


#: (second, its RFC 3339 form): every write stamps a time, and formatting one costs more than
#: the rest of a small write's bookkeeping
_last_stamp: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current UTC time to the second, as Kubernetes writes timestamps."""
    global _last_stamp
    now = time.time()
    second = int(now)
    stamp = _last_stamp
    if stamp[0] != second:
        stamp = _last_stamp = (second, _dt.datetime.fromtimestamp(second, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return stamp[1]


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def name_of(obj: dict) -> str:
    return meta(obj).get("name", "")


def namespace_of(obj: dict) -> str:
    return meta(obj).get("namespace", "")


def uid_of(obj: dict) -> str:
    return meta(obj).get("uid", "")


def ref(obj: dict) -> str:
    """``namespace/name`` or ``name``, for messages."""
    ns = namespace_of(obj)
    return f"{ns}/{name_of(obj)}" if ns else name_of(obj)


def describe(obj: dict) -> str:
    """``Kind namespace/name`` for messages."""
    return f"{obj.get('kind', 'object')} {ref(obj) or '<unnamed>'}"


def get_path(obj: dict, path: str):
    """The value at a dotted path (``spec.nodeName``), or None."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


# ---------------------------------------------------------------------------------------------
# Label selectors (string form, as in ``kubectl -l``) and LabelSelector objects.

_REQ = re.compile(
    r"""\s*(?:
        (?P<notexists>!\s*(?P<nk>[^\s,!=()]+)) |
        (?P<setk>[^\s,!=()]+)\s+(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\) |
        (?P<k>[^\s,!=()]+)\s*(?P<op>==|=|!=)\s*(?P<v>[^\s,!=()]*) |
        (?P<exists>[^\s,!=()]+)
    )\s*(?:,|$)""",
    re.X,
)

LabelPredicate = Callable[[dict], bool]


def parse_label_selector(text: str | None) -> LabelPredicate:
    """Compile ``app=x,tier!=db,env in (a,b),!legacy,gpu`` into a predicate over a labels dict.

    The operators are those of ``kubectl -l``: ``=``/``==`` (equal), ``!=`` (not equal, or absent),
    ``in (...)``, ``notin (...)`` (not one of them, or absent), ``key`` (exists) and ``!key`` (absent);
    requirements are joined by commas and must all hold. Raises BadRequest naming the position of
    anything else.
    """
    if not text:
        return lambda labels: True
    if not isinstance(text, str):
        raise BadRequest(f"a label selector must be a string, got {type(text).__name__}")
    reqs: list[LabelPredicate] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _REQ.match(text, pos)
        if not m or m.end() == pos or (m.group(0).rstrip().endswith(",") and m.end() == len(text)):
            raise BadRequest(f"unable to parse label selector {text!r} at position {pos}")
        pos = m.end()
        if m.group("notexists"):
            k = m.group("nk")
            reqs.append(lambda lb, k=k: k not in lb)
        elif m.group("setk"):
            k, op = m.group("setk"), m.group("setop")
            vals = {v.strip() for v in m.group("vals").split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=k, vals=vals: lb.get(k) in vals)
            else:
                reqs.append(lambda lb, k=k, vals=vals: lb.get(k) not in vals)
        elif m.group("k"):
            k, op, v = m.group("k"), m.group("op"), m.group("v")
            if op == "!=":
                reqs.append(lambda lb, k=k, v=v: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=k, v=v: lb.get(k) == v)
        else:
            k = m.group("exists")
            reqs.append(lambda lb, k=k: k in lb)
    return lambda labels: all(r(labels) for r in reqs)


def label_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions); None matches nothing, {} everything."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, vals = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # the API server refuses such a selector; matching nothing is the safe reading
    return True


def parse_field_selector(text: str | None, allowed: Iterable[str] | None = None) -> Callable[[dict], bool]:
    """Compile ``spec.nodeName=n1,status.phase!=Failed`` into a predicate over whole objects.

    Operators are ``=``, ``==`` and ``!=``; a missing field reads as the empty string, booleans as
    ``true``/``false``. ``allowed`` is the set of field paths the kind supports (the API server
    refuses any other with ``field label not supported``); None allows every path.
    """
    if not text:
        return lambda obj: True
    if not isinstance(text, str):
        raise BadRequest(f"a field selector must be a string, got {type(text).__name__}")
    allowed_set = None if allowed is None else set(allowed)
    reqs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise BadRequest(f"invalid field selector {text!r}: empty requirement")
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise BadRequest(f"invalid field selector {text!r}: {part!r}")
        path, op, value = m.groups()
        if allowed_set is not None and path not in allowed_set:
            raise BadRequest(
                f'field label not supported: "{path}" (supported: {", ".join(sorted(allowed_set))})'
            )

        def pred(obj, path=path, op=op, value=value):
            got = get_path(obj, path)
            if isinstance(got, bool):
                got = "true" if got else "false"
            got = "" if got is None else str(got)
            return got != value if op == "!=" else got == value

        reqs.append(pred)
    return lambda obj: all(r(obj) for r in reqs)
