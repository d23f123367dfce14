"""Makes the real control-plane fixtures (controlplane/fixture.py) available to every test under test/:
one session-scoped control plane shared by the harness's smoke tests and the end-to-end tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_name = "kai_controlplane_fixture"
if _name not in sys.modules:
    _fixture = Path(__file__).resolve().parent / "controlplane" / "fixture.py"
    _spec = importlib.util.spec_from_file_location(_name, _fixture)
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_name] = _mod
    _spec.loader.exec_module(_mod)

controlplane = sys.modules[_name].controlplane
controlplane_binaries = sys.modules[_name].controlplane_binaries
