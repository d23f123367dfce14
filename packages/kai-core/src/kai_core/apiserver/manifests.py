"""Reading Kubernetes manifests from files and directories, and saving a cluster's state.

Manifests are multi-document YAML (PyYAML's C loader when available) or JSON. Every problem is
reported with the file, the document number and, where there is one, the object's kind and name.

Timestamps stay strings: YAML 1.1 would turn an unquoted ``2024-01-01T00:00:00Z`` into a datetime,
which the API server never does (it decodes JSON, where a timestamp is a string).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from kai_core.api.errors import ApiError

try:  # the C loader is ~10x faster on large state files
    _BaseLoader = yaml.CSafeLoader
    _Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader without YAML 1.1 timestamps (they stay strings, as in the Kubernetes API)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest could not be read or applied; ``str()`` names the file and the object."""


@dataclass(frozen=True)
class Manifest:
    """One object read from a manifest file; ``source`` is ``"path/file.yaml#3"`` (1-based document)."""

    source: str
    obj: dict

    def label(self) -> str:
        """``source (Kind namespace/name)`` for messages; never fails, whatever the object holds."""
        md = self.obj.get("metadata")
        md = md if isinstance(md, dict) else {}
        name = md.get("name") or (f"{md.get('generateName')}*" if md.get("generateName") else "<unnamed>")
        ns = md.get("namespace")
        what = f"{self.obj.get('kind') or '?'} {f'{ns}/' if ns else ''}{name}"
        return f"{self.source} ({what})"


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


def _load_json(text: str, source: str) -> list:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def parse_documents(text: str, source: str) -> list[Manifest]:
    """Parse multi-document YAML (or JSON when ``source`` ends in ``.json``); ``List`` objects are
    flattened, empty documents skipped. Raises ManifestError naming the file and line (bad YAML) or
    the document and object (a document that is not a mapping, a missing apiVersion or kind)."""
    if source.endswith(".json"):
        docs = _load_json(text, source)
    else:
        try:
            docs = list(yaml.load_all(text, Loader=_Loader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ManifestError(f"{source}{where}: invalid YAML: {problem}") from None
    out: list[Manifest] = []
    for i, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        src = f"{source}#{i}"
        if not isinstance(doc, dict):
            raise ManifestError(f"{src}: a manifest must be a mapping, got {type(doc).__name__}")
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
            for j, item in enumerate(doc["items"]):
                isrc = f"{src}.items[{j}]"
                if not isinstance(item, dict):
                    raise ManifestError(f"{isrc}: a manifest must be a mapping, got {type(item).__name__}")
                out.append(_check_object(Manifest(isrc, item)))
            continue
        out.append(_check_object(Manifest(src, doc)))
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
    return {"CustomResourceDefinition": 0, "Namespace": 1}.get(kind, 2)


def apply_manifests(store, manifests: list[Manifest]) -> list[dict]:
    """Put every manifest into an embedded store (uids and resourceVersions kept).

    Stops at the first object the store refuses, raising ManifestError naming it.
    """
    applied = []
    for m in sorted(manifests, key=_apply_order):
        try:
            applied.append(store.restore(m.obj))
        except ApiError as exc:
            raise ManifestError(f"{m.label()}: {exc.message}") from None
    return applied


def check_manifests(store, manifests: list[Manifest]) -> list[str]:
    """Apply what applies and return one line per object refused (for `kai-cli validate`)."""
    problems = []
    for m in sorted(manifests, key=_apply_order):
        try:
            store.restore(m.obj)
        except ApiError as exc:
            problems.append(f"{m.label()}: {exc.message}")
    return problems


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
