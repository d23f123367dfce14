"""Label selectors compiled once, and found through the placed pods' label index.

``metav1.LabelSelector`` semantics: ``matchLabels`` and ``matchExpressions`` are ANDed; an empty
selector matches every pod, a missing one (None) matches none. ``matchLabelKeys`` and
``mismatchLabelKeys`` (pod affinity terms, topology spread constraints) add ``key in (value)`` /
``key notin (value)`` for each key the owning pod has, with the owning pod's value; a key the pod
lacks adds nothing. The API server also merges them into the selector when it creates the pod;
merging again is harmless (the same requirement twice).
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A selector the API server would refuse; the message says which part."""


@dataclass(frozen=True)
class Selector:
    """A compiled label selector: requirements ``(key, operator, values)``; ``nothing`` matches no pod."""

    requirements: tuple[tuple[str, str, frozenset], ...] = ()
    nothing: bool = False

    def matches(self, labels: dict) -> bool:
        if self.nothing:
            return False
        for key, op, values in self.requirements:
            if op == "In":
                if labels.get(key) not in values:
                    return False
            elif op == "NotIn":
                if key in labels and labels[key] in values:
                    return False
            elif op == "Exists":
                if key not in labels:
                    return False
            elif key in labels:  # DoesNotExist
                return False
        return True

    def candidates(self, by_label: dict, everything: dict) -> dict:
        """``{pod key: pod}`` holding at least every pod the selector matches: the smallest bucket of
        an ``In`` or ``Exists`` requirement in ``by_label`` (see ``PlacedPods.by_label``), else
        ``everything``. Callers still call :meth:`matches` on each."""
        if self.nothing:
            return {}
        best = everything
        for key, op, values in self.requirements:
            if op == "In":
                if len(values) == 1:
                    (value,) = values
                    bucket = by_label.get((key, value)) or {}
                else:
                    bucket = {}
                    for value in values:
                        bucket.update(by_label.get((key, value)) or {})
            elif op == "Exists":
                bucket = by_label.get((key, None)) or {}
            else:
                continue
            if len(bucket) < len(best):
                best = bucket
        return best


NOTHING = Selector(nothing=True)


def compile_selector(selector, owner_labels: dict | None = None, match_keys=None, mismatch_keys=None,
                     where: str = "labelSelector") -> Selector:
    """Compile ``selector`` (a LabelSelector dict or None), with ``match_keys``/``mismatch_keys`` taken
    from ``owner_labels``. Raises :class:`SelectorError` naming ``where`` for a malformed one."""
    if selector is None:
        return NOTHING
    if not isinstance(selector, dict):
        raise SelectorError(f"{where} must be a label selector")
    reqs: list[tuple[str, str, frozenset]] = []
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise SelectorError(f"{where}.matchLabels must map label keys to values")
    for k, v in match_labels.items():
        reqs.append((k, "In", frozenset([v])))
    exprs = selector.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise SelectorError(f"{where}.matchExpressions must be a list")
    for i, e in enumerate(exprs):
        op = e.get("operator") if isinstance(e, dict) else None
        key = e.get("key") if isinstance(e, dict) else None
        values = (e.get("values") or []) if isinstance(e, dict) else []
        if not isinstance(key, str) or not key or op not in OPERATORS or not isinstance(values, list):
            raise SelectorError(f"{where}.matchExpressions[{i}]: needs a key and an operator among "
                                f"{', '.join(OPERATORS)}")
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"{where}.matchExpressions[{i}]: {op} needs values")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{where}.matchExpressions[{i}]: {op} takes no values")
        reqs.append((key, op, frozenset(values)))
    labels = owner_labels or {}
    for field_name, keys, op in (("matchLabelKeys", match_keys, "In"), ("mismatchLabelKeys", mismatch_keys, "NotIn")):
        if keys is None:
            continue
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise SelectorError(f"{field_name} must be a list of label keys")
        reqs.extend((k, op, frozenset([labels[k]])) for k in keys if k in labels)
    return Selector(tuple(reqs))
