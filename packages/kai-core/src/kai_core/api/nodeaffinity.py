"""Kubernetes ``NodeSelector`` matching on plain JSON dicts.

The same rules the Kubernetes scheduler applies to ``spec.affinity.nodeAffinity`` and that the DRA
allocator applies to ``ResourceSlice.spec.nodeSelector`` / ``AllocationResult.nodeSelector``:

* a ``NodeSelector`` is the OR of its ``nodeSelectorTerms``; a term is the AND of its
  ``matchExpressions`` (on node labels) and ``matchFields`` (on node fields, only ``metadata.name``);
* a term without any requirement matches no node, and so does a selector without terms;
* ``Gt``/``Lt`` compare the label value as an integer; a label that is not an integer does not match.

A malformed requirement (unknown operator, wrong number of values, a field other than
``metadata.name``...) raises :class:`NodeSelectorError` with a message naming the requirement, so the
caller can tell the user which object is broken instead of silently never matching.
"""

from __future__ import annotations

import re

__all__ = [
    "NodeSelectorError",
    "match_node_selector",
    "match_node_selector_term",
    "node_selector_for_node",
]

# strconv.ParseInt(s, 10, 64) accepts an optional sign and decimal digits only.
_INT_RE = re.compile(r"[+-]?[0-9]+")
_LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
_FIELD_OPERATORS = frozenset({"In", "NotIn"})
_SUPPORTED_FIELDS = frozenset({"metadata.name"})


class NodeSelectorError(ValueError):
    """A node selector requirement is malformed; the message says which one and why."""


def node_selector_for_node(node_name: str) -> dict:
    """A ``NodeSelector`` that admits exactly the node called ``node_name`` (by ``metadata.name``)."""
    return {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }


def named_nodes(terms: list) -> set[str] | None:
    """The node names a required node affinity's (valid) ``nodeSelectorTerms`` let through by
    ``matchFields`` ``metadata.name In`` requirements, as kube-scheduler's NodeAffinity PreFilter
    reads them: a term's requirements intersected, the terms joined; None when some term names no
    node (any node may match it). An empty set: no name can meet the terms."""
    names: set[str] = set()
    for term in terms:
        named = None
        for r in (term.get("matchFields") or []) if isinstance(term, dict) else ():
            if isinstance(r, dict) and r.get("key") == "metadata.name" and r.get("operator") == "In":
                values = {v for v in r.get("values") or [] if isinstance(v, str)}
                named = values if named is None else named & values
        if named is None:
            return None
        names |= named
    return names


def match_node_selector(selector: dict | None, node: dict) -> bool:
    """Whether ``node`` satisfies ``selector`` (a v1 ``NodeSelector``); ``None`` admits every node.

    Terms are ORed. A selector with no terms admits nothing, as upstream.
    """
    if selector is None:
        return True
    if not isinstance(selector, dict):
        raise NodeSelectorError(f"node selector must be an object, got {type(selector).__name__}")
    terms = selector.get("nodeSelectorTerms") or []
    if not isinstance(terms, list):
        raise NodeSelectorError("nodeSelectorTerms must be a list")
    for index, term in enumerate(terms):
        try:
            if match_node_selector_term(term, node):
                return True
        except NodeSelectorError as err:
            raise NodeSelectorError(f"nodeSelectorTerms[{index}]: {err}") from None
    return False


def match_node_selector_term(term: dict, node: dict) -> bool:
    """Whether ``node`` satisfies every requirement of one ``NodeSelectorTerm``.

    An empty term (no ``matchExpressions`` and no ``matchFields``) matches nothing, as upstream:
    an empty term is almost certainly a mistake, and admitting every node would hide it.
    """
    if not isinstance(term, dict):
        raise NodeSelectorError(f"a node selector term must be an object, got {type(term).__name__}")
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not isinstance(expressions, list) or not isinstance(fields, list):
        raise NodeSelectorError("matchExpressions and matchFields must be lists")
    if not expressions and not fields:
        return False
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    # Validate every requirement before evaluating any, so a malformed one is reported whatever
    # its position instead of hiding behind an earlier mismatch.
    for index, req in enumerate(expressions):
        _validate(req, f"matchExpressions[{index}]", _LABEL_OPERATORS)
    for index, req in enumerate(fields):
        _validate(req, f"matchFields[{index}]", _FIELD_OPERATORS)
        if req["key"] not in _SUPPORTED_FIELDS:
            raise NodeSelectorError(
                f"matchFields[{index}]: field {req['key']!r} is not supported (only metadata.name)"
            )
        if len(req.get("values") or []) != 1:
            raise NodeSelectorError(
                f"matchFields[{index}]: operator {req['operator']} on a field needs exactly one value"
            )
    for req in expressions:
        if not _match_label_requirement(req, labels):
            return False
    name = metadata.get("name", "")
    for req in fields:
        inside = name in req["values"]
        if inside != (req["operator"] == "In"):
            return False
    return True


def _validate(req: object, where: str, operators: frozenset[str]) -> None:
    if not isinstance(req, dict):
        raise NodeSelectorError(f"{where}: a requirement must be an object")
    key = req.get("key")
    operator = req.get("operator")
    values = req.get("values") or []
    if not isinstance(key, str) or not key:
        raise NodeSelectorError(f"{where}: key is missing")
    if operator not in operators:
        allowed = ", ".join(sorted(operators))
        raise NodeSelectorError(f"{where}: operator {operator!r} is not one of {allowed}")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise NodeSelectorError(f"{where}: values must be a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise NodeSelectorError(f"{where}: operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise NodeSelectorError(f"{where}: operator {operator} takes no values")
    if operator in ("Gt", "Lt") and (len(values) != 1 or not _INT_RE.fullmatch(values[0])):
        raise NodeSelectorError(f"{where}: operator {operator} needs exactly one integer value, got {values}")


def _match_label_requirement(req: dict, labels: dict) -> bool:
    key = req["key"]
    operator = req["operator"]
    present = key in labels
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator == "In":
        return present and labels[key] in req["values"]
    if operator == "NotIn":
        return not present or labels[key] not in req["values"]
    # Gt / Lt: the label must exist and parse as an integer.
    value = labels.get(key)
    if not isinstance(value, str) or not _INT_RE.fullmatch(value):
        return False
    bound = int(req["values"][0])
    return int(value) > bound if operator == "Gt" else int(value) < bound
