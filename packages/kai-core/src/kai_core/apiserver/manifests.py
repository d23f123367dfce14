"""Reading Kubernetes manifests from files and directories, and saving a cluster's state.

Manifests are multi-document YAML (PyYAML's C loader when available) or JSON, decoded within the
bounds kubectl and the API server keep (:mod:`kai_core.api.decode`: alias expansion, duplicate keys,
nesting, integer and object sizes). Every problem is reported with the file, the document number
and, where there is one, the object's kind and name; an object defined twice names both places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from kai_core.api.decode import DecodeError, Loader, load_json, load_yaml
from kai_core.api.errors import ApiError, shorten

try:  # the C dumper is ~10x faster on large state files
    _Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Dumper = yaml.SafeDumper

#: the loader manifests are read with (kept under its old name)
_Loader = Loader

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest could not be read or applied; ``str()`` names the file and the object."""


@dataclass(frozen=True)
class Manifest:
    """One object read from a manifest file; ``source`` is ``"path/file.yaml#3"`` (1-based document),
    ``line`` the line it starts on (0 when unknown)."""

    source: str
    obj: dict
    line: int = 0

    def label(self) -> str:
        """``source (Kind namespace/name)`` for messages; never fails, whatever the object holds."""
        return f"{self.source} ({object_label(self.obj)})"

    def place(self) -> str:
        """``source`` and the line, e.g. ``"a.yaml#2 line 14"``."""
        return f"{self.source} line {self.line}" if self.line else self.source


def object_label(obj: dict) -> str:
    """``Kind namespace/name`` of an object, long names cut; never fails."""
    md = obj.get("metadata")
    md = md if isinstance(md, dict) else {}
    name = md.get("name") or (f"{md.get('generateName')}*" if md.get("generateName") else "<unnamed>")
    ns = md.get("namespace")
    return f"{shorten(str(obj.get('kind') or '?'), 100)} {shorten(f'{ns}/{name}' if ns else str(name))}"


def manifest_files(path: str | os.PathLike) -> list[Path]:
    """The manifest files a path names: the file itself, or every ``*.yaml``/``*.yml``/``*.json``
    under a directory (recursively, sorted, hidden files and folders skipped)."""
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p}: no such file or directory")
    if p.is_dir():
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix in MANIFEST_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise ManifestError(f"{p}: no manifest files (*.yaml, *.yml, *.json) in this directory")
        return files
    return [p]


def _check_object(m: Manifest) -> Manifest:
    for field in ("apiVersion", "kind"):
        value = m.obj.get(field)
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{m.label()}: {field} is required (a non-empty string)")
    return m


def parse_documents(text: str, source: str) -> list[Manifest]:
    """Parse multi-document YAML (or JSON when ``source`` ends in ``.json``); ``List`` objects are
    flattened, empty documents skipped. Raises ManifestError naming the file and line (bad YAML, a
    bound of :mod:`kai_core.api.decode` broken) or the document and object (a document that is not
    a mapping, a missing apiVersion or kind)."""
    try:
        docs = [load_json(text)] if source.endswith(".json") else list(load_yaml(text))
    except DecodeError as exc:
        raise ManifestError(exc.message(source, "JSON" if source.endswith(".json") else "YAML")) from None
    out: list[Manifest] = []
    for d in docs:
        doc = d.data
        if doc is None:
            continue
        src = f"{source}#{d.index}"
        if not isinstance(doc, dict):
            raise ManifestError(f"{src}: a manifest must be a mapping, got {type(doc).__name__}")
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
            for j, item in enumerate(doc["items"]):
                isrc = f"{src}.items[{j}]"
                if not isinstance(item, dict):
                    raise ManifestError(f"{isrc}: a manifest must be a mapping, got {type(item).__name__}")
                line = d.item_lines[j] if j < len(d.item_lines) else d.line
                out.append(_check_object(Manifest(isrc, item, line)))
            continue
        out.append(_check_object(Manifest(src, doc, d.line)))
    return out


def read_manifests(path: str | os.PathLike) -> list[Manifest]:
    """Every object in a file or directory (recursively, sorted by path)."""
    out: list[Manifest] = []
    for f in manifest_files(path):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{f}: cannot read: {exc}") from None
        out.extend(parse_documents(text, str(f)))
    return out


def _apply_order(m: Manifest) -> int:
    # what other objects need must exist first, as `kubectl apply` users order their files
    kind = m.obj.get("kind")
    return {"CustomResourceDefinition": 0, "Namespace": 1, "PriorityClass": 1}.get(kind, 2)


def _identity(store, obj: dict):
    """What makes two manifests the same object: (resource, namespace, name); None when the object
    has no usable name or kind (the store refuses it with its own message)."""
    md = obj.get("metadata")
    name = md.get("name") if isinstance(md, dict) else None
    if not isinstance(name, str) or not name:
        return None  # generateName: a new object each time
    try:
        kind = store.kinds.for_object(obj)
    except ApiError:
        return None
    ns = (md.get("namespace") or "default") if kind.namespaced else ""
    return (kind.resource, ns if isinstance(ns, str) else repr(ns), name)


def _apply_each(store, manifests: list[Manifest]):
    """Apply every manifest in :func:`_apply_order`, yielding ``(manifest, stored object or None,
    problem or None)``: a refused object, one defined twice (both places named), or one whose
    structure the store cannot handle, each as one line naming the object."""
    seen: dict[tuple, Manifest] = {}
    for m in sorted(manifests, key=_apply_order):
        ident = _identity(store, m.obj)
        first = seen.setdefault(ident, m) if ident is not None else m
        if first is not m:
            here = f"line {m.line}: " if m.line else ""
            yield m, None, f"{m.label()}: {here}duplicate object, also defined at {first.place()}"
            continue
        try:
            yield m, store.restore(m.obj), None
        except ApiError as exc:
            yield m, None, f"{m.label()}: {shorten(exc.message, 2000)}"
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            yield m, None, f"{m.label()}: cannot be stored: {shorten(f'{type(exc).__name__}: {exc}')}"


def apply_manifests(store, manifests: list[Manifest]) -> list[dict]:
    """Put every manifest into an embedded store (uids and resourceVersions kept).

    Stops at the first object the store refuses, or that is defined twice, raising ManifestError
    naming it (and, for a duplicate, the first place).
    """
    applied = []
    for _m, obj, problem in _apply_each(store, manifests):
        if problem is not None:
            raise ManifestError(problem)
        applied.append(obj)
    return applied


def check_manifests(store, manifests: list[Manifest]) -> list[str]:
    """Apply what applies and return one line per object refused (for `kai-cli validate`)."""
    return [problem for _m, _obj, problem in _apply_each(store, manifests) if problem is not None]


def dump_objects(objs: list[dict]) -> str:
    """One YAML document per object, keys in the usual order (apiVersion, kind, metadata, ...)."""
    ordered = []
    for o in objs:
        head = {k: o[k] for k in ("apiVersion", "kind", "metadata") if k in o}
        head.update({k: v for k, v in o.items() if k not in head})
        ordered.append(head)
    return yaml.dump_all(ordered, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_state(store, path: str | os.PathLike) -> None:
    """Write the whole state of an embedded store to one multi-document file."""
    text = dump_objects(store.all_objects())
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
