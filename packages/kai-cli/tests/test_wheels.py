"""The four wheels as users (and deploy/Dockerfile) install them: every file of each package's source
tree is inside, the data files the code reads included (the CRDs of kai_core and kai_dra_nvidia,
the demo cluster's manifests), with the entry points and the pinned sibling dependencies.

The wheels come from ``$KAI_WHEELS_DIR`` (``tox -e wheels`` builds them there, installs them and
runs these tests in that environment, where the installed copies are also checked); otherwise they
are built here when the build backend (hatchling) is installed, without fetching anything.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = {"kai-core": "kai_core", "kai-binder": "kai_binder", "kai-dra-nvidia": "kai_dra_nvidia",
            "kai-cli": "kai_cli"}
VERSION = "0.1.0"
#: data files the code reads at run time, per package (glob under the import package)
DATA = {
    "kai_core": ["crds/*.yaml"],
    "kai_dra_nvidia": ["crds/*.yaml", "demo/*.yaml"],
}


def source_files(module: str) -> set[str]:
    """Every file of an import package's source tree, as wheel member names."""
    dist = module.replace("_", "-")
    src = ROOT / "packages" / dist / "src"
    out = set()
    for path in (src / module).rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out.add(path.relative_to(src).as_posix())
    return out


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    given = os.environ.get("KAI_WHEELS_DIR")
    if given:
        return Path(given)
    if not (ROOT / "deploy" / "wheels.py").is_file():
        pytest.skip("deploy/wheels.py is absent: the wheels are built from a checkout of the repository")
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("set KAI_WHEELS_DIR to built wheels, or install hatchling to build them here "
                    "(tox -e wheels does both)")
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "wheels.py"), "build", str(out),
                           "--no-build-isolation"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def wheel(wheel_dir: Path, dist: str) -> zipfile.ZipFile:
    path = wheel_dir / f"{PACKAGES[dist]}-{VERSION}-py3-none-any.whl"
    assert path.is_file(), f"no wheel of {dist} in {wheel_dir}: {sorted(p.name for p in wheel_dir.iterdir())}"
    return zipfile.ZipFile(path)


@pytest.mark.parametrize("dist", list(PACKAGES))
def test_wheel_holds_the_whole_package(wheel_dir, dist):
    module = PACKAGES[dist]
    with wheel(wheel_dir, dist) as whl:
        names = set(whl.namelist())
        missing = source_files(module) - names
        assert not missing, f"{dist} wheel lacks {sorted(missing)}"
        for pattern in DATA.get(module, []):
            found = [n for n in names if Path(n).match(f"{module}/{pattern}")]
            assert found, f"{dist} wheel has no {module}/{pattern}"
        meta = whl.read(f"{module}-{VERSION}.dist-info/METADATA").decode()
        assert f"Name: {dist}" in meta
        for sibling in {"kai-binder": ["kai-core"], "kai-dra-nvidia": ["kai-core"],
                        "kai-cli": ["kai-core", "kai-binder", "kai-dra-nvidia"]}.get(dist, []):
            assert f"Requires-Dist: {sibling}=={VERSION}" in meta


def test_wheels_declare_the_command_and_the_plugin(wheel_dir):
    with wheel(wheel_dir, "kai-cli") as whl:
        eps = whl.read(f"kai_cli-{VERSION}.dist-info/entry_points.txt").decode()
        assert "kai-cli = kai_cli.main:cli" in eps
    with wheel(wheel_dir, "kai-dra-nvidia") as whl:
        eps = whl.read(f"kai_dra_nvidia-{VERSION}.dist-info/entry_points.txt").decode()
        assert "[kai_scheduler.plugins]" in eps and "dra-nvidia = kai_dra_nvidia.plugin" in eps


def test_installed_packages_are_the_wheels_and_find_their_data():
    if not os.environ.get("KAI_WHEELS_DIR"):
        pytest.skip("only where the built wheels are installed (tox -e wheels)")
    import kai_binder
    import kai_cli
    import kai_core
    import kai_dra_nvidia
    from kai_core.apiserver.schema import builtin_crd_paths, load_crd
    from kai_dra_nvidia.demo import demo_manifests_path

    checkout = ROOT / "packages"
    for mod in (kai_core, kai_binder, kai_dra_nvidia, kai_cli):
        where = Path(mod.__file__).resolve()
        assert not where.is_relative_to(checkout), f"{mod.__name__} is imported from the checkout: {where}"
    crds = [Path(p) for p in builtin_crd_paths()]
    assert crds and all(p.is_file() and not p.resolve().is_relative_to(checkout) for p in crds)
    assert load_crd(crds[0])["spec"]["names"]["kind"] == "BindRequest"
    demo = Path(demo_manifests_path())
    assert not demo.resolve().is_relative_to(checkout) and len(list(demo.glob("*.yaml"))) >= 5
