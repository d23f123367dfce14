"""The FpgaConfig checks on their own: plain functions, no cluster needed."""

from __future__ import annotations

import pytest

config = pytest.importorskip("kai_plugin_fpga.config", reason="kai-plugin-fpga is not installed")

GOOD = {"apiVersion": "fpga.example.com/v1alpha1", "kind": "FpgaConfig", "clockMHz": 400,
        "powerLimitWatts": 75}


def test_a_valid_config_has_no_problems():
    assert config.parameters_problems(GOOD) == []
    assert config.parameters_problems({"apiVersion": "fpga.example.com/v1alpha1", "kind": "FpgaConfig"}) == []


@pytest.mark.parametrize(("change", "problem"), [
    ({"apiVersion": "v1"}, "parameters.apiVersion 'v1' is not fpga.example.com/v1alpha1"),
    ({"kind": "GpuConfig"}, "parameters.kind 'GpuConfig' is not FpgaConfig"),
    ({"clockMHz": "400"}, "parameters.clockMHz must be an integer, got '400'"),
    ({"clockMHz": True}, "parameters.clockMHz must be an integer, got True"),
    ({"clockMHz": 99}, "parameters.clockMHz 99 is out of range (100..600)"),
    ({"powerLimitWatts": 300}, "parameters.powerLimitWatts 300 is out of range (25..225)"),
    ({"clock": 400},
     "unknown field(s) parameters.clock (known: apiVersion, kind, clockMHz, powerLimitWatts)"),
])
def test_each_problem_names_the_field(change, problem):
    assert config.parameters_problems({**GOOD, **change}) == [problem]


def test_parameters_that_are_not_an_object():
    assert config.parameters_problems(None) == [
        "parameters must be an object (apiVersion fpga.example.com/v1alpha1, kind FpgaConfig), got NoneType"]
