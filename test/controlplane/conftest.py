"""Makes the control-plane fixtures (fixture.py) available to the tests in this directory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_name = "kai_controlplane_fixture"
if _name not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_name, Path(__file__).resolve().parent / "fixture.py")
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_name] = _mod
    _spec.loader.exec_module(_mod)

controlplane = sys.modules[_name].controlplane
controlplane_binaries = sys.modules[_name].controlplane_binaries
