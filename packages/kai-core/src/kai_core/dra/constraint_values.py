"""How ``matchAttribute`` and ``distinctAttribute`` compare device attributes, list-valued ones included.

An attribute a constraint looks at is a scalar ``(kind, value)`` tuple (``("string", "pci0")``) or a
:class:`ListValue` (``strings: [...]``, ``ints``, ``bools``, ``versions``: KEP-5491, alpha behind
``DRAListTypeAttributes``). With the gate on (``lists``), upstream's "experimental" allocator treats every
attribute as a set, a scalar being a set of one, and an ``int`` only ever equals an ``int`` of ``ints``
(and so on for each kind; versions compare as strings, as the API keeps them in canonical form):

* ``matchAttribute``: the devices' sets have a common element, the intersection of all of them being
  non-empty (three devices holding ``[a, b]``, ``[b, c]`` and ``[c, a]`` do not match);
* ``distinctAttribute``: the devices' sets are pairwise disjoint.

With the gate off, upstream's stable and incubating allocators compare scalars only: the first device
of a set may hold anything, a list-valued attribute then matches no other device, and a device holding
one cannot join a ``distinctAttribute`` set that already has a device.
"""

from __future__ import annotations

from collections.abc import Mapping

#: list kind -> the scalar kind of its elements
LIST_KINDS = {"ints": "int", "bools": "bool", "strings": "string", "versions": "version"}


class ListValue:
    """A list-valued attribute: its ``kind`` (``strings``...), ``items`` as published, and ``elements``
    as ``(scalar kind, value)`` pairs, comparable with scalar attributes."""

    __slots__ = ("elements", "items", "kind")

    def __init__(self, kind: str, items: tuple) -> None:
        self.kind = kind
        self.items = items
        element_kind = LIST_KINDS[kind]
        self.elements = frozenset((element_kind, item) for item in items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ListValue) and other.kind == self.kind and other.elements == self.elements

    def __hash__(self) -> int:
        return hash((self.kind, self.elements))

    def __repr__(self) -> str:
        return f"{self.kind} {list(self.items)!r}"


def elements(value: object) -> frozenset:
    """The set a value stands for: a scalar's set of one, a list's elements, or an intersection."""
    if type(value) is tuple:
        return frozenset((value,))
    if isinstance(value, ListValue):
        return value.elements
    assert isinstance(value, frozenset)
    return value


def match_next(shared: object, value: object, lists: bool) -> object | None:
    """What a ``matchAttribute`` set shares once a device holding ``value`` joins it (``shared`` being
    the first device's value or, with lists, the elements all devices so far have in common); None
    when the device does not match."""
    if type(shared) is tuple and type(value) is tuple:  # two scalars, whatever the gate
        return shared if shared == value else None
    if not lists:
        return None
    common = elements(shared) & elements(value)
    return common or None


def distinct_keys(value: object, lists: bool, owner: object) -> tuple:
    """What a device holding ``value`` takes in a ``distinctAttribute`` set; ``owner`` (the device)
    stands for a list value with the gate off, which upstream compares with nothing."""
    if type(value) is tuple:
        return (value,)
    if lists:
        return tuple(elements(value))
    return (("list", owner),)


def distinct_allows(taken: Mapping, value: object, keys: tuple, lists: bool) -> bool:
    """Whether a device holding ``value`` (its ``keys`` from :func:`distinct_keys`) may join a
    ``distinctAttribute`` set whose devices took ``taken``."""
    if not lists and type(value) is not tuple:
        return not taken  # with the gate off upstream takes a list value only as the first device
    return not any(key in taken for key in keys)


def distinct_room(values: set, taken: Mapping, lists: bool) -> int:
    """At most how many more devices, holding ``values`` between them (each distinct value once), a
    ``distinctAttribute`` set whose devices took ``taken`` can still accept."""
    room = 0
    for value in values:
        if type(value) is tuple:
            room += value not in taken
        elif lists:
            room += taken.keys().isdisjoint(value.elements)
        else:
            room += not taken
    return room


def describe(value: object) -> str:
    """A value for a message: ``'pci0' (a string)``, ``strings ['a', 'b']`` or the common elements."""
    if type(value) is tuple:
        return f"{value[1]!r} (a {value[0]})"
    if isinstance(value, ListValue):
        return repr(value)
    return repr(sorted(item for _, item in value))
