"""Reading Kubernetes manifests from files and directories, and saving a cluster's state.

Manifests are multi-document YAML (PyYAML's C loader when available). Every problem is reported
with the file, the document number and, where there is one, the object's kind and name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from kai_core.errors import ApiError

try:  # the C loader is ~10x faster on large state files
    _Loader = yaml.CSafeLoader
    _Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest could not be read or applied; ``str()`` names the file and the object."""


@dataclass(frozen=True)
class Manifest:
    source: str  # "path/file.yaml#3" (document number, 1-based)
    obj: dict

    def label(self) -> str:
        md = self.obj.get("metadata") or {}
        name = md.get("name") or (md.get("generateName", "") + "*")
        ns = md.get("namespace")
        what = f"{self.obj.get('kind', '?')} {ns + '/' if ns else ''}{name}"
        return f"{self.source} ({what})"


def manifest_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p}: no such file or directory")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
        if not files:
            raise ManifestError(f"{p}: no manifest files (*.yaml, *.yml, *.json) in this directory")
        return files
    return [p]


def parse_documents(text: str, source: str) -> list[Manifest]:
    """Parse multi-document YAML; ``List`` objects are flattened. Raises ManifestError."""
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
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            for j, item in enumerate(doc["items"]):
                if not isinstance(item, dict):
                    raise ManifestError(f"{src} item {j}: a manifest must be a mapping")
                out.append(Manifest(f"{src}.items[{j}]", item))
            continue
        for field in ("apiVersion", "kind"):
            if not isinstance(doc.get(field), str) or not doc.get(field):
                raise ManifestError(f"{Manifest(src, doc).label()}: {field} is required")
        out.append(Manifest(src, doc))
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
