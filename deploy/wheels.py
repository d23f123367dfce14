"""Build the four kai wheels, or install built ones (not editable checkouts).

    python deploy/wheels.py build DIR [--no-build-isolation]
    python deploy/wheels.py install DIR

``build`` runs ``pip wheel --no-deps`` over packages/kai-core, kai-binder, kai-dra-nvidia and
kai-cli into DIR (replacing any kai wheels already there). ``install`` installs exactly those four
wheel files into the running interpreter's environment; their third-party dependencies come from the
package index as usual. The kai wheels are always given as files, never looked up by name, since
names like ``kai-core`` are not ours on the public index. ``tox -e wheels`` runs both;
deploy/Dockerfile runs ``build`` and installs the same files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: distribution name -> its source directory, in dependency order
PACKAGES = {name: ROOT / "packages" / name
            for name in ("kai-core", "kai-binder", "kai-dra-nvidia", "kai-cli")}


def wheel_prefix(dist: str) -> str:
    """The file-name prefix of a distribution's wheels (``kai-dra-nvidia`` -> ``kai_dra_nvidia-``)."""
    return dist.replace("-", "_") + "-"


def find_wheels(directory: Path) -> list[Path]:
    """The one wheel of each kai package in ``directory``, in dependency order.

    Raises SystemExit naming the package when its wheel is missing or there is more than one."""
    found = []
    for dist in PACKAGES:
        matches = sorted(directory.glob(wheel_prefix(dist) + "*.whl"))
        if len(matches) != 1:
            listed = ", ".join(m.name for m in matches)
            what = f"{len(matches)} wheels ({listed})" if matches else "no wheel"
            raise SystemExit(f"deploy/wheels.py: {directory}: {what} of {dist}; run 'build' first")
        found.append(matches[0])
    return found


def build(directory: Path, isolation: bool = True) -> list[Path]:
    """Build the four wheels into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    for dist in PACKAGES:
        for old in directory.glob(wheel_prefix(dist) + "*.whl"):
            old.unlink()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(directory)]
    if not isolation:
        cmd.append("--no-build-isolation")
    _run(cmd + [str(p) for p in PACKAGES.values()])
    return find_wheels(directory)


def install(directory: Path) -> list[Path]:
    """Install the four wheels of ``directory``; a wheel of the same version already installed is
    replaced, so a rebuilt wheel is what runs."""
    wheels = [str(w) for w in find_wheels(directory)]
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    _run(pip + wheels)
    _run(pip + ["--force-reinstall", "--no-deps"] + wheels)
    return [Path(w) for w in wheels]


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, check=False)
    if done.returncode:
        raise SystemExit(f"deploy/wheels.py: {cmd[2]} {cmd[3]} failed with exit code {done.returncode}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="deploy/wheels.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="pip wheel --no-deps the four packages into DIR")
    b.add_argument("directory", type=Path)
    b.add_argument("--no-build-isolation", action="store_true",
                   help="use the build backend (hatchling) installed here instead of fetching one")
    i = sub.add_parser("install", help="pip install the four wheels of DIR")
    i.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.action == "build":
        wheels = build(args.directory, isolation=not args.no_build_isolation)
    else:
        wheels = install(args.directory)
    for w in wheels:
        print(w.name)


if __name__ == "__main__":
    main()
