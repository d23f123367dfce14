"""Decoding YAML and JSON documents with the bounds kubectl and the API server put on them.

A manifest file may be hostile: a few bytes of YAML aliases can stand for billions of nodes, and
nesting or numbers can be too large for the code that reads them. Every bound below either is the
Kubernetes toolchain's own, or stands for one that Python needs lower; a document beyond it is
refused with one :class:`DecodeError` naming the line (and, once known, the object):

* **Alias expansion**, as go-yaml counts it (``sigs.k8s.io/yaml``, which kubectl and the API server
  use; the fix of CVE-2019-11253): decoding a document counts every node decoded, and those decoded
  through an alias; once more than 100 came through aliases and more than 1,000 were decoded, a
  share of aliased nodes above 99 % (up to 400,000 nodes decoded, falling to 10 % at 4,000,000) stops
  it with ``document contains excessive aliasing``. PyYAML shares an anchored node instead of copying
  it, so loading costs nothing, but every later copy of the object would expand it: the count is
  made on the composed node graph, without expanding anything.
* **An anchor inside its own value** (``a: &x [*x]``): go-yaml refuses it (``anchor 'x' value
  contains itself``); PyYAML would build a recursive structure that nothing downstream survives.
* **Duplicate mapping keys**: refused as kubectl's strict decoding does (``key "x" already set in
  map``, naming the first one's line too); JSON objects likewise (``duplicate field "x"``).
* **Nesting**: go-yaml and encoding/json stop at 10,000 levels; Python's recursion limit allows far
  fewer, so objects may nest :data:`MAX_DEPTH` levels (aliases expanded), several times the
  deepest real objects (CRD schemas with embedded pod templates nest about 30).
* **Integers** of more than :data:`MAX_INT_DIGITS` digits (Python's own limit for converting them
  to and from text), and the non-numbers ``.nan``/``.inf`` (``NaN``/``Infinity`` in JSON), which
  JSON cannot carry, so kubectl refuses them (``json: unsupported value: NaN``).
* **Object size**: the API server takes request bodies of at most 3 MiB (:data:`MAX_OBJECT_BYTES`);
  a larger object is refused by its size in the file.

Timestamps stay strings: YAML 1.1 would turn an unquoted ``2024-01-01T00:00:00Z`` into a datetime,
which the API server never does (it decodes JSON, where a timestamp is a string).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml
from yaml.constructor import ConstructorError

from kai_core.api.errors import short_repr

try:  # the C parser is ~10x faster on large state files
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

#: objects nest at most this deep (the root mapping is level 1; aliases count expanded)
MAX_DEPTH = 100
#: integers of more digits are refused (``sys.get_int_max_str_digits()``'s default)
MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS
#: the API server's request body limit (``MaxRequestBodyBytes``); larger objects are refused
MAX_OBJECT_BYTES = 3 * 1024 * 1024
#: go-yaml's alias bound (decode.go, ``allowedAliasRatio``)
_ALIAS_RATIO_LOW = 400_000
_ALIAS_RATIO_HIGH = 4_000_000
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


class DecodeError(ValueError):
    """A document could not be decoded, or is beyond a bound. ``problem`` says what; ``line`` (1-based)
    and ``document`` (1-based index in its file) say where when known, ``label`` names the object
    (``Kind namespace/name``) when it could be read."""

    def __init__(self, problem: str, *, line: int | None = None, document: int | None = None,
                 label: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        self.document = document
        self.label = label

    def message(self, source: str, syntax: str = "YAML") -> str:
        """The one line to show: ``source#document (Kind namespace/name): line N: problem`` when the
        object is known, else ``source:line: invalid YAML: problem``."""
        if self.document is not None and self.label:
            line = f"line {self.line}: " if self.line else ""
            return f"{source}#{self.document} ({self.label}): {line}{self.problem}"
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: invalid {syntax}: {self.problem}"


def allowed_alias_ratio(decoded: int) -> float:
    """The share of decoded nodes that may come from aliases once ``decoded`` nodes were decoded."""
    if decoded <= _ALIAS_RATIO_LOW:
        return 0.99
    if decoded >= _ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _ALIAS_RATIO_LOW) / (_ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW)


# --------------------------------------------------------------------------------------------------
# YAML


def _refuse(problem: str, node: yaml.Node) -> ConstructorError:
    return ConstructorError(None, None, problem, node.start_mark)


class Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader (libyaml's parser when built with it) that refuses duplicate keys, huge
    integers and non-finite floats, and keeps timestamps as strings."""

    #: whether every mapping's keys are checked here; else only those in ``odd_mappings`` (the
    #: others were checked on the composed graph: :func:`load_yaml`)
    check_all_keys = True

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.odd_mappings: set[int] = set()

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode) and (self.check_all_keys or id(node) in self.odd_mappings):
            seen: dict = {}
            for key_node, _value in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault((type(key), key), key_node)
                except TypeError:
                    continue  # an unhashable key: the base class refuses it
                if first is not key_node:
                    raise _refuse(_duplicate(key, first), key_node)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = node.value if isinstance(node.value, str) else ""
        if len(text) > MAX_INT_DIGITS + 8:  # a sign, a 0x prefix and some '_' separators
            raise _refuse(f"an integer of {len(text)} characters is beyond the limit of {MAX_INT_DIGITS} digits",
                          node)
        try:
            value = super().construct_yaml_int(node)
        except ValueError:
            raise _refuse(f"an integer of {len(text)} characters is beyond the limit of {MAX_INT_DIGITS} digits",
                          node) from None
        if -_INT_BOUND < value < _INT_BOUND:
            return value
        raise _refuse(f"an integer of more than {MAX_INT_DIGITS} digits is beyond the limit", node)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if math.isfinite(value):
            return value
        raise _refuse(f"{short_repr(node.value)}: NaN and infinities cannot be represented in JSON", node)


def _duplicate(key, first) -> str:
    return f"key {_quote(key)} already set in map (first at line {first.start_mark.line + 1})"


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)


def _quote(key) -> str:
    return json.dumps(key) if isinstance(key, str) and len(key) <= 200 else short_repr(key)


@dataclass
class Document:
    """One decoded document: its 1-based ``index`` in the file, the ``line`` it starts on, and
    ``data``; ``item_lines`` are the lines of a ``List``'s items when known."""

    index: int
    line: int
    data: object
    item_lines: list[int] = field(default_factory=list)


def _children(node: yaml.Node) -> list:
    value = node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(value)
    return []


def _scalar(node, key: str):
    """The scalar value of ``key`` in a mapping node, or None."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v.value if isinstance(v, yaml.ScalarNode) else v
    return None


def node_label(root) -> str | None:
    """``Kind namespace/name`` of a document's root node, from its scalars alone (for messages
    about a document that could not be decoded); None when it has no kind."""
    kind = _scalar(root, "kind")
    if not isinstance(kind, str) or not kind:
        return None
    meta = _scalar(root, "metadata")
    name = _scalar(meta, "name") or _scalar(meta, "generateName")
    ns = _scalar(meta, "namespace")
    name = name if isinstance(name, str) and name else "<unnamed>"
    what = f"{ns}/{name}" if isinstance(ns, str) and ns else name
    return f"{_cut(kind)} {_cut(what)}"


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _Graph:
    """The bounds of one composed document: aliases (as go-yaml counts them), cycles, depth."""

    def __init__(self, track_aliases: bool, odd: set[int]) -> None:
        self.track = track_aliases
        self.odd = odd  # mappings whose keys the loader must check (all of them when tracking aliases)
        self.first_edge: dict[int, tuple[int, int]] = {}  # node -> the edge it was defined on
        self.done: set[int] = set()
        self.memo: dict[int, tuple[int, int]] = {}  # node -> (nodes decoded, height), aliases expanded

    def check(self, root) -> tuple[int, str] | None:
        if not self.track:
            return self._depth(root)
        return self._walk(root)

    def _depth(self, root) -> tuple[int, str] | None:
        """The nesting bound and duplicate keys, in a document without aliases (no node is shared).
        Keys that are not plain strings are left to the loader (their values decide)."""
        scalar, mapping, odd = yaml.ScalarNode, yaml.MappingNode, self.odd
        stack = [(root, 1)] if type(root) is not scalar else []
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                return node.start_mark.line + 1, f"nesting deeper than {MAX_DEPTH} levels"
            if type(node) is mapping:
                seen: dict = {}
                for key, value in node.value:
                    if type(key) is scalar and key.tag == _STR_TAG:
                        first = seen.setdefault(key.value, key)
                        if first is not key:
                            return key.start_mark.line + 1, _duplicate(key.value, first)
                    else:
                        odd.add(id(node))
                        if type(key) is not scalar:
                            stack.append((key, depth + 1))
                    if type(value) is not scalar:
                        stack.append((value, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in node.value if type(child) is not scalar)
        return None

    def _walk(self, root) -> tuple[int, str] | None:
        """The first bound ``root`` breaks, as (line, message), or None. Nodes are visited in
        document order, so the first visit of a node is its definition and a later one an alias."""
        decoded, aliased = 1, 0  # go-yaml counts the document node too
        # (node, depth, parent, index in the parent); depth 0 marks leaving a node
        stack: list = [(root, 1, None, 0)]
        first_edge, done, track = self.first_edge, self.done, True
        while stack:
            node, depth, parent, index = stack.pop()
            ident = id(node)
            if depth == 0:
                done.add(ident)
                continue
            if track:
                if ident in first_edge:  # an alias of a node defined earlier, or being defined
                    # (named by the collection holding the alias: the node itself is the anchor's)
                    if ident not in done:
                        return self._at(parent, "an anchor's value contains itself (a recursive alias)")
                    size, height = self._expanded(node)
                    decoded += 1 + size
                    aliased += size
                    if aliased > 100 and decoded > 1000 and aliased / decoded > allowed_alias_ratio(decoded):
                        return self._at(parent, "document contains excessive aliasing (its aliases expand to "
                                                f"{aliased:,} of {decoded:,} nodes)")
                    if depth - 1 + height > MAX_DEPTH:
                        return self._at(parent, f"nesting deeper than {MAX_DEPTH} levels (aliases expanded)")
                    continue
                first_edge[ident] = (id(parent), index)
            decoded += 1
            if isinstance(node, yaml.ScalarNode):
                if track:
                    done.add(ident)
                continue
            if depth > MAX_DEPTH:
                return self._at(node, f"nesting deeper than {MAX_DEPTH} levels")
            if track:
                stack.append((node, 0, 0, 0))
            children = _children(node)
            stack.extend((children[i], depth + 1, node, i) for i in range(len(children) - 1, -1, -1))
        return None

    @staticmethod
    def _at(node, problem: str) -> tuple[int, str]:
        return node.start_mark.line + 1, problem

    def _expanded(self, node) -> tuple[int, int]:
        """(nodes go-yaml decodes for ``node``, its nesting height), aliases below it expanded."""
        memo, first_edge = self.memo, self.first_edge
        if id(node) in memo:
            return memo[id(node)]
        stack = [(node, False)]
        while stack:
            n, leaving = stack.pop()
            nid = id(n)
            if nid in memo:
                continue
            kids = _children(n)
            if not leaving:
                stack.append((n, True))
                stack.extend((c, False) for c in kids if id(c) not in memo)
                continue
            size, height = 1, 0
            for i, c in enumerate(kids):
                csize, cheight = memo[id(c)]
                size += csize + (0 if first_edge.get(id(c)) == (nid, i) else 1)
                height = max(height, cheight)
            memo[nid] = (size, height + (0 if isinstance(n, yaml.ScalarNode) else 1))
        return memo[id(node)]


def load_yaml(text: str) -> Iterator[Document]:
    """Every document of a multi-document YAML text, decoded within the bounds of the module
    docstring (empty documents give ``data`` None). Raises :class:`DecodeError`."""
    loader = Loader(text)
    track = "&" in text and "*" in text  # aliases need an anchor: without both, there are none
    index = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                root = loader.get_node()
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise DecodeError(_cut(problem), line=mark.line + 1 if mark is not None else None) from None
            except RecursionError:  # the pure-Python composer (PyYAML without libyaml)
                raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels", document=index + 1) from None
            index += 1
            if root is None:
                continue
            line = root.start_mark.line + 1
            items = _list_items(root)
            loader.check_all_keys = track
            loader.odd_mappings.clear()
            found = _Graph(track, loader.odd_mappings).check(root) or _size_problem(root, items)
            if found is not None:
                raise DecodeError(found[1], line=found[0], document=index, label=node_label(root))
            try:
                data = loader.construct_document(root)
            except ConstructorError as exc:
                mark = exc.problem_mark
                raise DecodeError(_cut(str(exc.problem)), line=mark.line + 1 if mark is not None else line,
                                  document=index, label=node_label(root)) from None
            except (ValueError, TypeError, RecursionError) as exc:
                raise DecodeError(_cut(f"{type(exc).__name__}: {exc}"), line=line, document=index,
                                  label=node_label(root)) from None
            item_lines = [n.start_mark.line + 1 for n in items or ()]
            yield Document(index, line, data, item_lines)
    finally:
        loader.dispose()


def _list_items(root) -> list | None:
    """The item nodes of a ``List`` document, or None for any other document."""
    items, kind = _scalar(root, "items"), _scalar(root, "kind")
    if isinstance(items, yaml.SequenceNode) and isinstance(kind, str) and kind.endswith("List"):
        return list(items.value)
    return None


def _size_problem(root, items: list | None) -> tuple[int, str] | None:
    """(line, message) when an object of the document (each item of a ``List``) is larger than the
    API server takes, else None."""
    for node in items if items is not None else [root]:
        size = node.end_mark.index - node.start_mark.index
        if size > MAX_OBJECT_BYTES:
            return node.start_mark.line + 1, (f"an object of {size:,} characters: more than the API server "
                                             f"accepts ({MAX_OBJECT_BYTES:,} bytes)")
    return None


# --------------------------------------------------------------------------------------------------
# JSON


class _JsonRefused(ValueError):
    pass


def _json_object(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _JsonRefused(f"duplicate field {_quote(key)}")
        out[key] = value
    return out


def _json_constant(name: str):
    raise _JsonRefused(f"{name} is not a JSON number (NaN and infinities cannot be represented)")


def _json_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:
        raise _JsonRefused(f"an integer of {len(text)} digits is beyond the limit of {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRefused(f"{short_repr(text)} is beyond the range of a JSON number")
    return value


def load_json(text: str) -> Document:
    """One JSON document, decoded within the same bounds as :func:`load_yaml`. Raises DecodeError."""
    try:
        data = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant,
                          parse_int=_json_int, parse_float=_json_float)
    except json.JSONDecodeError as exc:
        raise DecodeError(_cut(exc.msg), line=exc.lineno) from None
    except _JsonRefused as exc:
        raise DecodeError(_cut(str(exc))) from None
    except RecursionError:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels") from None
    label = _data_label(data)
    depth = data_depth(data, MAX_DEPTH + 1)
    if depth > MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels", document=1, label=label)
    if len(text) > MAX_OBJECT_BYTES:
        objs = data.get("items") if isinstance(data, dict) and isinstance(data.get("items"), list) \
            and str(data.get("kind", "")).endswith("List") else [data]
        for obj in objs:
            size = len(json.dumps(obj))
            if size > MAX_OBJECT_BYTES:
                raise DecodeError(f"an object is {size:,} bytes long: more than the API server accepts "
                                  f"({MAX_OBJECT_BYTES:,} bytes)", document=1,
                                  label=_data_label(obj) or label)
    return Document(1, 1, data)


def _data_label(data) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return None
    md = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    name, ns = md.get("name") or md.get("generateName"), md.get("namespace")
    name = name if isinstance(name, str) and name else "<unnamed>"
    return f"{_cut(data['kind'])} {_cut(f'{ns}/{name}' if isinstance(ns, str) and ns else name)}"


def data_depth(data, stop: int) -> int:
    """How deep ``data`` nests (a scalar is 0, ``{}`` 1), counting no further than ``stop``."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest >= stop:
                return deepest
        stack.extend((c, depth + 1) for c in children)
    return deepest
