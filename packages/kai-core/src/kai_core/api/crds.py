"""Our CustomResourceDefinitions as data: load and check a CRD, and find the ones a package ships.

What every layer may need (the embedded API server validates against CRDs, the Kubernetes client
builds its kinds from them), kept apart from schema validation (:mod:`kai_core.apiserver.schema`).
"""

from __future__ import annotations

import atexit
import importlib.resources
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kai_core.api.decode import DecodeError, load_yaml

_CRD_API_VERSION = "apiextensions.k8s.io/v1"


class SchemaError(ValueError):
    """A CRD or a custom resource is invalid.

    ``str()`` names the field path and the problem, several problems joined by ``"; "`` and sorted by
    path, e.g. ``"spec.receivedGPU.count: 'x' is not of type 'integer'"``. ``errors`` holds the
    problems one by one; ``ref`` names the object or file they belong to when known (e.g.
    ``"BindRequest default/pod-a"``), so a caller can report ``f"{e.ref} is invalid: {e}"``.
    """

    def __init__(self, errors: str | Sequence[str], *, ref: str = "") -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        self.ref = ref
        super().__init__("; ".join(self.errors))


# --------------------------------------------------------------------------------------------------
# Loading CRDs


def load_crd(path_or_text: str | os.PathLike[str] | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Parse one CustomResourceDefinition and check that it is one.

    Accepts a path (``str`` or ``PathLike``), YAML/JSON text (``str`` with a newline, or ``bytes``) or an
    already parsed mapping. The YAML may hold exactly one non-empty document. Raises
    :class:`SchemaError` naming the source and the problem: unreadable file, bad YAML, not an
    ``apiextensions.k8s.io/v1`` CRD, missing group/names/versions/schemas, no single storage version,
    or ``metadata.name`` other than ``<plural>.<group>``.
    """
    if isinstance(path_or_text, Mapping):
        source = "CRD"
        doc: Any = dict(path_or_text)
    else:
        source, text = _read_source(path_or_text)
        try:
            docs = [d.data for d in load_yaml(text) if d.data is not None]
        except DecodeError as exc:
            raise SchemaError(exc.message(source), ref=source) from None
        if len(docs) != 1:
            raise SchemaError(f"{source}: expected exactly one YAML document, found {len(docs)}", ref=source)
        doc = docs[0]
    problems = _crd_problems(doc)
    if problems:
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if name and isinstance(name, str) and source == "CRD":
            source = f"CRD {name}"
        raise SchemaError([f"{source}: {p}" for p in problems], ref=source)
    return doc


def _read_source(path_or_text: str | os.PathLike[str] | bytes) -> tuple[str, str]:
    """Return (a name for error messages, the text) for a path or a text argument."""
    if isinstance(path_or_text, bytes):
        return "CRD", path_or_text.decode("utf-8", errors="replace")
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str) and "\n" not in path_or_text and _looks_like_path(path_or_text)
    ):
        path = Path(path_or_text)
        try:
            return str(path), path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"{path}: cannot read CRD file: {exc.strerror or exc}", ref=str(path)) from None
    if isinstance(path_or_text, str):
        return "CRD", path_or_text
    raise SchemaError(f"expected a path, YAML text or a mapping, got {type(path_or_text).__name__}")


def _looks_like_path(text: str) -> bool:
    """A one-line string is a path if it names a file, ends like one, or cannot be a YAML mapping."""
    return os.path.exists(text) or text.endswith((".yaml", ".yml", ".json")) or ":" not in text


def _crd_problems(doc: Any) -> list[str]:
    """Everything that makes ``doc`` unusable as a CRD, as messages; empty when it is fine."""
    if not isinstance(doc, dict):
        return [f"expected a mapping, got {type(doc).__name__}"]
    if doc.get("apiVersion") != _CRD_API_VERSION or doc.get("kind") != "CustomResourceDefinition":
        found = f"apiVersion {doc.get('apiVersion')!r}, kind {doc.get('kind')!r}"
        return [
            f"not a CustomResourceDefinition ({found}; expected {_CRD_API_VERSION} CustomResourceDefinition)"
        ]
    problems: list[str] = []
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return ["spec: required field is missing"]
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        problems.append("spec.group: required field is missing")
    names = spec.get("names")
    if not isinstance(names, dict):
        problems.append("spec.names: required field is missing")
        names = {}
    for key in ("kind", "plural"):
        if not isinstance(names.get(key), str) or not names.get(key):
            problems.append(f"spec.names.{key}: required field is missing")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(f"spec.scope: {spec.get('scope')!r} is not one of ['Namespaced', 'Cluster']")
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        problems.append("spec.versions: at least one version is required")
        versions = []
    storage = 0
    for i, ver in enumerate(versions):
        where = f"spec.versions[{i}]"
        if not isinstance(ver, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        if not isinstance(ver.get("name"), str) or not ver.get("name"):
            problems.append(f"{where}.name: required field is missing")
        storage += bool(ver.get("storage"))
        schema = (
            (ver.get("schema") or {}).get("openAPIV3Schema") if isinstance(ver.get("schema"), dict) else None
        )
        if not isinstance(schema, dict):
            problems.append(f"{where}.schema.openAPIV3Schema: required field is missing")
    if versions and storage != 1:
        problems.append(f"spec.versions: exactly one version must have storage: true, found {storage}")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    if not problems and name != f"{names['plural']}.{group}":
        problems.append(f"metadata.name: {name!r} must be {names['plural']}.{group!s}")
    return problems


def crd_versions(crd: Mapping[str, Any]) -> list[str]:
    """Names of the CRD's served versions, in the order the CRD lists them."""
    return [
        v["name"]
        for v in crd.get("spec", {}).get("versions", [])
        if isinstance(v, dict) and v.get("served", True) and isinstance(v.get("name"), str)
    ]


def storage_version(crd: Mapping[str, Any]) -> str:
    for ver in crd["spec"]["versions"]:
        if ver.get("storage"):
            return ver["name"]
    raise SchemaError("no storage version")  # pragma: no cover - load_crd checks this


# --------------------------------------------------------------------------------------------------
# Packaged CRDs

_EXTRACTED: dict[str, Path] = {}  # package -> temporary folder holding its extracted CRDs (zipped installs)


def builtin_crd_paths(package: str = "kai_core") -> list[Path]:
    """The CRD files shipped in ``<package>/crds/*.yaml``, sorted by file name.

    Uses importlib.resources, so it works from a wheel; a plugin passes its own package name (e.g. a
    device plugin shipping its own CRDs). From a zipped install the files are extracted once, with
    their names, into a temporary folder removed at exit. Returns an empty list when the package
    has no ``crds`` folder.
    """
    root = importlib.resources.files(package) / "crds"
    if not root.is_dir():
        return []
    entries = sorted(
        (e for e in root.iterdir() if e.name.endswith((".yaml", ".yml")) and e.is_file()),
        key=lambda e: e.name,
    )
    if all(isinstance(e, Path) for e in entries):
        return list(entries)  # type: ignore[arg-type]
    folder = _EXTRACTED.get(package)
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix=f"{package}-crds-"))
        atexit.register(shutil.rmtree, folder, True)
        for entry in entries:
            (folder / entry.name).write_bytes(entry.read_bytes())
        _EXTRACTED[package] = folder
    return [folder / e.name for e in entries]


def crd_path(name: str, package: str = "kai_core") -> Path:
    """The packaged CRD file for ``name``: a CRD name (``bindrequests.scheduling.run.ai``), or a file
    name with or without ``.yaml`` (``scheduling.run.ai_bindrequests``). Raises FileNotFoundError
    listing what the package ships when there is no such CRD."""
    paths = builtin_crd_paths(package)
    wanted = {name, f"{name}.yaml"}
    plural, dot, group = name.partition(".")
    if dot:
        wanted.add(f"{group}_{plural}.yaml")
    for path in paths:
        if path.name in wanted:
            return path
    shipped = ", ".join(p.name for p in paths) or "none"
    raise FileNotFoundError(f"no CRD {name!r} in {package} (ships: {shipped})")
