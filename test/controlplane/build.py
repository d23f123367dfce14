#!/usr/bin/env python3
"""Build (or reuse) a real Kubernetes control plane from Go modules: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler.

The Kubernetes binaries come from the Go module ``k8s.io/kubernetes`` required by ``go.mod`` beside
this file (the default release); etcd comes from ``go.etcd.io/etcd/server/v3`` required by
``etcd/go.mod``. Nothing of their source is kept in the repository: ``go`` downloads the modules
through the module proxy into its module cache.

Binaries are cached outside the repository, keyed by version::

    $KAI_CONTROLPLANE_CACHE (default: $XDG_CACHE_HOME/kai-controlplane or ~/.cache/kai-controlplane)
        kubernetes-v1.37.2/{kube-apiserver,kube-controller-manager,kube-scheduler}
        etcd-v3.6.17/etcd
        modules/...            generated go.mod/go.sum for releases other than the committed ones
        logs/...               go's output of the last build of each version

and reused: a second run returns at once. Environment:

    KAI_K8S_VERSION=v1.34.3    build another k8s.io/kubernetes release (its go.mod is generated)
    KAI_ETCD_VERSION=v3.5.36   another go.etcd.io/etcd/server/v3 release
    KAI_CONTROLPLANE_CACHE=DIR where the binaries are cached

Usage: ``python test/controlplane/build.py`` (prints the binaries' paths),
``python test/controlplane/build.py gen-gomod`` (regenerates the committed go.mod/go.sum for
``KAI_K8S_VERSION``). Failures (no Go, no module proxy, a failed compile) raise ``BuildError``
with one line saying what went wrong; the command prints it and exits 2.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ETCD_DIR = HERE / "etcd"
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
K8S_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
_VERSION_RE = re.compile(r"^v1\.(\d+)\.(\d+)$")


class BuildError(RuntimeError):
    """The control plane could not be built; the message is one line saying why."""


# ---------------------------------------------------------------- versions and paths


def _required_version(gomod: Path, module: str) -> str:
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod.read_text(), re.M)
    if not m:
        raise BuildError(f"{gomod} does not require {module}")
    return m.group(1)


def default_k8s_version() -> str:
    """The release the committed go.mod pins."""
    return _required_version(HERE / "go.mod", K8S_MODULE)


def default_etcd_version() -> str:
    return _required_version(ETCD_DIR / "go.mod", ETCD_MODULE)


def k8s_version() -> str:
    v = os.environ.get("KAI_K8S_VERSION", "").strip() or default_k8s_version()
    if not v.startswith("v"):
        v = "v" + v
    if not _VERSION_RE.match(v):
        raise BuildError(f"KAI_K8S_VERSION={v!r} is not a Kubernetes release like v1.36.2")
    return v


def etcd_version() -> str:
    v = os.environ.get("KAI_ETCD_VERSION", "").strip() or default_etcd_version()
    if not v.startswith("v"):
        v = "v" + v
    if not re.match(r"^v3\.\d+\.\d+$", v):
        raise BuildError(f"KAI_ETCD_VERSION={v!r} is not an etcd release like v3.6.17")
    return v


def cache_root() -> Path:
    env = os.environ.get("KAI_CONTROLPLANE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "kai-controlplane"


def staging_version(version: str) -> str:
    """v1.36.2 -> v0.36.2: the tag of k8s.io/kubernetes' staging modules for that release."""
    m = _VERSION_RE.match(version)
    if not m:
        raise BuildError(f"{version!r} is not a Kubernetes release like v1.36.2")
    return f"v0.{m.group(1)}.{m.group(2)}"


# ---------------------------------------------------------------- running go


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if not go:
        raise BuildError("cannot build the Kubernetes control plane: the Go toolchain ('go') is not on PATH")
    return go


def _go_env(mod: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = f"-mod={mod} -buildvcs=false"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


_NETWORK_HINTS = (
    "dial tcp",
    "no such host",
    "i/o timeout",
    "connection refused",
    "TLS handshake timeout",
    "network is unreachable",
    "proxyconnect",
    "Client.Timeout",
    "temporary failure in name resolution",
    "module lookup disabled",
)


def _summarise(output: str, what: str, log: Path | None) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    where = f" (full output: {log})" if log else ""
    for ln in lines:
        if any(h.lower() in ln.lower() for h in _NETWORK_HINTS):
            proxy = (
                os.environ.get("GOPROXY")
                or subprocess.run([_go(), "env", "GOPROXY"], stdout=subprocess.PIPE, text=True).stdout.strip()
            )
            return (
                f"cannot build the Kubernetes control plane: the Go module proxy (GOPROXY={proxy}) could not be "
                f"reached while {what}: {ln[:300]}{where}"
            )
    errs = [ln for ln in lines if "error" in ln.lower() or ln.startswith("go:") or ": " in ln]
    last = (errs or lines or ["no output"])[-1]
    return f"cannot build the Kubernetes control plane: {what} failed: {last[:300]}{where}"


def _run_go(args: list[str], cwd: Path, what: str, mod: str, log: Path | None = None, timeout: float = 3600) -> str:
    cmd = [_go(), *args]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=_go_env(mod), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"cannot build the Kubernetes control plane: {what} took longer than {timeout:.0f}s") from e
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"$ (cd {cwd} && {' '.join(cmd)})\n{proc.stdout}\n[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        raise BuildError(_summarise(proc.stdout, what, log))
    return proc.stdout


# ---------------------------------------------------------------- go.mod generation


def _parse_k8s_gomod(text: str) -> tuple[str, list[str], list[str]]:
    """(go line, godebug lines, staging module paths) of k8s.io/kubernetes' own go.mod."""
    go_line = re.search(r"^go\s+(\S+)", text, re.M)
    godebug: list[str] = []
    m = re.search(r"^godebug\s*\((.*?)^\)", text, re.M | re.S)
    if m:
        godebug = [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.strip().startswith("//")]
    godebug += re.findall(r"^godebug\s+([^(\s].*)$", text, re.M)
    staging = sorted(set(re.findall(r"^\s*(?:replace\s+)?(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", text, re.M)))
    return (go_line.group(1) if go_line else "1.24.0"), godebug, staging


def k8s_gomod_text(version: str, cwd: Path, log: Path | None = None) -> str:
    """A go.mod requiring k8s.io/kubernetes at ``version``, with every staging module replaced by
    its v0.X.Y release (k8s.io/kubernetes' own replaces point at ./staging and are ignored in a
    dependency)."""
    what = f"downloading {K8S_MODULE}@{version}"
    try:
        out = _run_go(["mod", "download", "-json", f"{K8S_MODULE}@{version}"], cwd, what, "mod", log)
    except BuildError as e:
        # go prints a JSON object with "Error" and exits 1; report that error alone
        text = log.read_text() if log and log.exists() else ""
        m = re.search(r'"Error": "((?:[^"\\]|\\.)*)"', text)
        if not m:
            raise
        err = json.loads(f'"{m.group(1)}"').replace("\n", " ").replace("\t", "")
        if any(h.lower() in err.lower() for h in _NETWORK_HINTS):
            raise BuildError(_summarise(err, what, log)) from e
        raise BuildError(f"cannot build the Kubernetes control plane: {err}") from e
    info = json.loads(out[out.index("{") :])
    go_line, godebug, staging = _parse_k8s_gomod(Path(info["GoMod"]).read_text())
    if not staging:
        raise BuildError(f"{K8S_MODULE}@{version}'s go.mod names no staging modules; cannot generate replaces")
    sv = staging_version(version)
    lines = [
        "// Generated by build.py gen-gomod: do not edit by hand.",
        "// The Kubernetes control plane for kai's tests, built from the k8s.io/kubernetes module.",
        "module kai.test/controlplane",
        "",
        f"go {go_line}",
        "",
    ]
    if godebug:
        lines += ["godebug (", *(f"\t{g}" for g in godebug), ")", ""]
    lines += [f"require {K8S_MODULE} {version}", ""]
    lines += ["tool (", *(f"\t{K8S_MODULE}/cmd/{b}" for b in K8S_BINARIES), ")", ""]
    lines += ["replace (", *(f"\t{p} => {p} {sv}" for p in staging), ")", ""]
    return "\n".join(lines)


def etcd_gomod_text(version: str) -> str:
    return "\n".join(
        [
            "// Generated by build.py: do not edit by hand.",
            "// etcd for kai's test control plane, built from the go.etcd.io/etcd/server/v3 module.",
            "module kai.test/controlplane/etcd",
            "",
            "go 1.24.0",
            "",
            f"require {ETCD_MODULE} {version}",
            "",
            f"tool {ETCD_MODULE}",
            "",
        ]
    )


def generate_module(dest: Path, gomod: str, what: str, log: Path | None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "go.mod").write_text(gomod)
    (dest / "go.sum").unlink(missing_ok=True)
    _run_go(["mod", "tidy"], dest, f"resolving the modules of {what} (go mod tidy)", "mod", log)


# ---------------------------------------------------------------- building


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ldflags(version: str) -> str:
    m = _VERSION_RE.match(version)
    assert m
    values = {
        "gitVersion": version,
        "gitMajor": "1",
        "gitMinor": m.group(1),
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[kai-controlplane] {msg}", file=sys.stderr, flush=True)


def _build(packages: list[str], moddir: Path, mod: str, outdir: Path, ldflags: str, what: str, log: Path) -> None:
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=outdir.name + ".tmp-", dir=outdir.parent))
    try:
        _run_go(
            ["build", "-p", "2", "-trimpath", "-ldflags", ldflags, "-o", str(tmp) + "/", *packages],
            moddir,
            f"building {what}",
            mod,
            log,
            timeout=4 * 3600,
        )
        if outdir.exists():
            shutil.rmtree(outdir)
        tmp.rename(outdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_kubernetes(version: str | None = None, quiet: bool = False) -> dict[str, Path]:
    version = version or k8s_version()
    root = cache_root()
    outdir = root / f"kubernetes-{version}"
    want = {b: outdir / b for b in K8S_BINARIES}
    if all(p.is_file() and os.access(p, os.X_OK) for p in want.values()):
        return want
    with _locked(root / f".lock-kubernetes-{version}"):
        if all(p.is_file() for p in want.values()):
            return want
        log = root / "logs" / f"kubernetes-{version}.log"
        log.unlink(missing_ok=True)
        if version == default_k8s_version():
            moddir, mod = HERE, "readonly"
        else:
            moddir, mod = root / "modules" / f"kubernetes-{version}", "mod"
            _say(f"generating the go.mod for {K8S_MODULE} {version} in {moddir}", quiet)
            generate_module(moddir, k8s_gomod_text(version, root, log), f"{K8S_MODULE} {version}", log)
        _say(f"building {', '.join(K8S_BINARIES)} {version} (a cold build takes a long while; log: {log})", quiet)
        t0 = time.monotonic()
        pkgs = [f"{K8S_MODULE}/cmd/{b}" for b in K8S_BINARIES]
        _build(pkgs, moddir, mod, outdir, _ldflags(version), f"Kubernetes {version}", log)
        _say(f"built Kubernetes {version} in {time.monotonic() - t0:.0f}s into {outdir}", quiet)
    return want


def ensure_etcd(version: str | None = None, quiet: bool = False) -> Path:
    version = version or etcd_version()
    root = cache_root()
    outdir = root / f"etcd-{version}"
    want = outdir / "etcd"
    if want.is_file() and os.access(want, os.X_OK):
        return want
    with _locked(root / f".lock-etcd-{version}"):
        if want.is_file():
            return want
        log = root / "logs" / f"etcd-{version}.log"
        log.unlink(missing_ok=True)
        if version == default_etcd_version():
            moddir, mod = ETCD_DIR, "readonly"
        else:
            moddir, mod = root / "modules" / f"etcd-{version}", "mod"
            generate_module(moddir, etcd_gomod_text(version), f"{ETCD_MODULE} {version}", log)
        _say(f"building etcd {version} (log: {log})", quiet)
        t0 = time.monotonic()
        ldflags = "-s -w"
        tmpbuild = outdir.parent / f"etcd-{version}.build"
        _build([ETCD_MODULE], moddir, mod, tmpbuild, ldflags, f"etcd {version}", log)
        # the main package of go.etcd.io/etcd/server/v3 builds as "v3": name it etcd
        built = [p for p in tmpbuild.iterdir() if p.is_file()]
        if len(built) != 1:
            raise BuildError(f"building etcd {version} produced {len(built)} files in {tmpbuild}, expected one")
        built[0].rename(tmpbuild / "etcd.bin")
        (tmpbuild / "etcd.bin").rename(tmpbuild / "etcd")
        if outdir.exists():
            shutil.rmtree(outdir)
        tmpbuild.rename(outdir)
        _say(f"built etcd {version} in {time.monotonic() - t0:.0f}s into {outdir}", quiet)
    return want


def ensure_binaries(quiet: bool = False) -> dict[str, Path]:
    """Paths of etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built if absent."""
    bins = {"etcd": ensure_etcd(quiet=quiet)}
    bins.update(ensure_kubernetes(quiet=quiet))
    return bins


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["gen-gomod"]:
            # regenerate the committed modules (go.mod + go.sum beside this file, and etcd/)
            v = os.environ.get("KAI_K8S_VERSION") or default_k8s_version()
            generate_module(HERE, k8s_gomod_text(v, HERE), f"{K8S_MODULE} {v}", None)
            ev = os.environ.get("KAI_ETCD_VERSION") or default_etcd_version()
            generate_module(ETCD_DIR, etcd_gomod_text(ev), f"{ETCD_MODULE} {ev}", None)
            print(f"wrote {HERE / 'go.mod'} ({v}) and {ETCD_DIR / 'go.mod'} ({ev})")
            return 0
        if argv:
            print(__doc__, file=sys.stderr)
            return 2
        for name, path in ensure_binaries().items():
            print(f"{name}\t{path}")
        return 0
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
