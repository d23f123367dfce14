"""The guide's test-kit example runs as written: its NIC plugin sketch (section 2) saved as
``nic_plugin.py`` and its ``test_nic.py`` (section 7), run by pytest in a fresh directory with no
conftest (the fixtures come from kai-cli's pytest11 entry point); and the explanation the guide
shows (section 8) is the one kai gives for that cluster."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kai_cli.testing import EmbeddedKaiCluster

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "writing-a-device-plugin.md"


def section(title: str) -> str:
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} not found: the guide is only in the source repository")
    found = re.search(rf"^##+ {re.escape(title)}.*?(?=^##+ )", GUIDE.read_text(encoding="utf-8"), re.S | re.M)
    assert found, f"the guide's section {title!r}"
    return found.group(0)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


@pytest.fixture
def written(tmp_path) -> Path:
    """The guide's nic_plugin.py and test_nic.py, written to a directory of their own."""
    [plugin] = blocks(section("Devices: removing one"), "python")
    [tests] = [b for b in blocks(section("The test kit"), "python") if b.startswith("# test_nic.py")]
    (tmp_path / "nic_plugin.py").write_text(plugin)
    (tmp_path / "test_nic.py").write_text(tests)
    return tmp_path


def test_the_guides_nic_tests_pass_with_only_the_kit(written):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_nic.py"],
                          cwd=written, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout
    assert not (written / "conftest.py").exists()


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # test_nic imports nic_plugin by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[path.stem]
    return module


def test_the_explanation_the_guide_shows_is_kais(written):
    nic = load(written / "nic_plugin.py")
    sys.modules["nic_plugin"] = nic
    try:
        tests = load(written / "test_nic.py")
    finally:
        del sys.modules["nic_plugin"]
    cluster = EmbeddedKaiCluster(tests.CLUSTER, plugins={"nic": nic, "gpu-ranker": tests.PreferGpu1()})
    try:
        cluster.run()
        got = cluster.explain("trainer").text()
    finally:
        cluster.close()
    [shown] = blocks(section("Why a node won"), "text")

    def claims_named_alike(text: str) -> str:  # claims made from templates get a random suffix
        return re.sub(r"trainer-net-[a-z0-9]{5}", "trainer-net-xxxxx", text).strip()

    assert claims_named_alike(got) == claims_named_alike(shown)
