"""Tests for kai_core.dra.cel: DRA device selectors with Kubernetes semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kai_core.dra.cel import (
    MAX_EXPRESSION_BYTES,
    CelCompileError,
    CelEvalError,
    DeviceEnv,
    Selector,
    compile_selector,
    device_env,
)

GPU = "gpu.nvidia.com"
CD = "compute-domain.nvidia.com"


def h100(**overrides: dict) -> DeviceEnv:
    """A full GPU as NVIDIA's kubelet plugin publishes it."""
    attributes = {
        "type": {"string": "gpu"},
        "uuid": {"string": "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"},
        "productName": {"string": "NVIDIA H100 80GB HBM3"},
        "brand": {"string": "Nvidia"},
        "architecture": {"string": "Hopper"},
        "cudaComputeCapability": {"version": "9.0.0"},
        "driverVersion": {"version": "550.54.15"},
        "cudaDriverVersion": {"version": "12.4.0"},
        "resource.kubernetes.io/pciBusID": {"string": "0000:3b:00.0"},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"},
        **overrides,
    }
    return device_env(GPU, attributes, {"memory": {"value": "80Gi"}})


def mig() -> DeviceEnv:
    return device_env(
        GPU,
        {
            "type": {"string": "mig"},
            "profile": {"string": "1g.10gb"},
            "driverVersion": {"version": "550.54.15"},
        },
        {"memory": {"value": "10Gi"}, "multiprocessors": {"value": "16"}},
    )


def channel() -> DeviceEnv:
    return device_env(CD, {"type": {"string": "channel"}, "id": {"int": 0}}, None)


def daemon() -> DeviceEnv:
    return device_env(CD, {"type": {"string": "daemon"}, "id": {"int": 0}}, {})


def matches(expression: str, env: DeviceEnv) -> bool:
    return compile_selector(expression).matches(env)


# ------------------------------------------------------------------------------- NVIDIA DeviceClasses


def _nvidia_class_selectors(upstream_dir: Path) -> dict[str, list[str]]:
    path = upstream_dir / "nvidia.deviceclasses.yaml"
    if not path.is_file():
        pytest.skip(f"upstream NVIDIA DeviceClasses not found at {path}")
    classes = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "DeviceClass":
            classes[doc["metadata"]["name"]] = [
                s["cel"]["expression"] for s in doc["spec"].get("selectors", [])
            ]
    return classes


@pytest.mark.parametrize(
    ("device_class", "expected"),
    [
        ("gpu.nvidia.com", {"gpu": True, "mig": False, "channel": False, "daemon": False}),
        ("mig.nvidia.com", {"gpu": False, "mig": True, "channel": False, "daemon": False}),
        ("vfio.gpu.nvidia.com", {"gpu": False, "mig": False, "channel": False, "daemon": False}),
        ("compute-domain-daemon.nvidia.com", {"gpu": False, "mig": False, "channel": False, "daemon": True}),
        (
            "compute-domain-default-channel.nvidia.com",
            {"gpu": False, "mig": False, "channel": True, "daemon": False},
        ),
    ],
)
def test_nvidia_device_classes_pick_their_devices(
    upstream_dir: Path, device_class: str, expected: dict[str, bool]
) -> None:
    selectors = _nvidia_class_selectors(upstream_dir)[device_class]
    assert selectors, f"{device_class} has no selectors"
    devices = {"gpu": h100(), "mig": mig(), "channel": channel(), "daemon": daemon()}
    got = {name: all(compile_selector(s).matches(env) for s in selectors) for name, env in devices.items()}
    assert got == expected


# ------------------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('550.0.0')) >= 0", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('550.100.0')) >= 0", False),
        ("device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('550.54.14'))", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.isLessThan(semver('1000.0.0'))", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.major() == 550", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.minor() == 54", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion.patch() == 15", True),
        ("device.attributes['gpu.nvidia.com'].driverVersion == semver('550.54.15')", True),
        ("device.attributes['gpu.nvidia.com'].cudaDriverVersion.compareTo(semver('12.4', true)) == 0", True),
        ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0", True),
        ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('100Gi')) >= 0", False),
        ("device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity('80G'))", True),
        ("device.capacity['gpu.nvidia.com'].memory == quantity('80Gi')", True),
        ("device.capacity['gpu.nvidia.com'].memory.asInteger() == 85899345920", True),
        ("device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('.*h100.*')", True),
        ("device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('.*a100.*')", False),
        ("cel.bind(a, device.attributes['gpu.nvidia.com'], a.type == 'gpu' && a.brand == 'Nvidia')", True),
        ("device.attributes['x.com'].?foo.orValue(1) == 1", True),
        ("device.attributes['gpu.nvidia.com'].?nope.orValue('none') == 'none'", True),
        ("has(device.attributes['gpu.nvidia.com'].uuid)", True),
        ("has(device.attributes['gpu.nvidia.com'].nope)", False),
        ("device.attributes['resource.kubernetes.io'].pcieRoot == 'pci0000:3a'", True),
        ("device.attributes['gpu.nvidia.com'].uuid.startsWith('GPU-')", True),
        ("device.attributes['gpu.nvidia.com'].architecture in ['Hopper', 'Blackwell']", True),
        ("device.attributes['unknown.example.com'].size() == 0", True),
        ("device.capacity['unknown.example.com'].size() == 0", True),
        ("'gpu.nvidia.com' in device.attributes", True),
        ("'unknown.example.com' in device.attributes", False),
        ("device.attributes[device.driver].type == 'gpu'", True),
        ("device.attributes.exists(d, d == 'resource.kubernetes.io')", True),
        ("size(device.attributes) == 2", True),
        ("device.allowMultipleAllocations == false", True),
    ],
)
def test_selector_on_a_gpu(expression: str, expected: bool) -> None:
    assert matches(expression, h100()) is expected


@pytest.mark.parametrize(
    "expression",
    [
        "quantity('1500m') == quantity('1.5')",
        "quantity('1500m').add(quantity('0.5')) == quantity('2')",
        "quantity('1').add(1) == quantity('2')",
        "quantity('5').sub(2) == quantity('3')",
        "quantity('5').sub(quantity('5500m')).sign() == -1",
        "sign(quantity('0')) == 0",
        "quantity('2').mul(3) == quantity('6')",
        "quantity('200M').compareTo(quantity('0.2G')) == 0",
        "quantity('50M').compareTo(quantity('50Mi')) == -1",
        "quantity('0.5m').isGreaterThan(quantity('0'))",
        "quantity('1.5').isInteger() == false && quantity('2k').isInteger()",
        "quantity('1.5').asApproximateFloat() == 1.5",
        "quantity('50k').asInteger() == 50000",
        "isQuantity('1Gi') && !isQuantity('1GB') && !isQuantity('')",
        "semver('1.2.3-alpha').isLessThan(semver('1.2.3'))",
        "semver('1.2.3-alpha.2').isLessThan(semver('1.2.3-alpha.10'))",
        "semver('1.2.3-alpha.10').isLessThan(semver('1.2.3-beta'))",
        "semver('1.2.3-1').isLessThan(semver('1.2.3-alpha'))",
        "semver('10.0.0').isGreaterThan(semver('9.99.99'))",
        "semver('1.0.0+build.1').compareTo(semver('1.0.0')) == 0",
        "semver('v1.2', true) == semver('1.2.0') && semver('01.02.03', true) == semver('1.2.3')",
        "isSemver('1.0.0') && !isSemver('1.0') && isSemver('1.0', true) && !isSemver('v1.0.0')",
        "'GPU'.lowerAscii() == 'gpu' && 'a,b'.split(',').size() == 2",
        "cel.bind(x, 2, x * x == 4)",
        "optional.of(1).orValue(2) == 1",
    ],
)
def test_library_functions(expression: str) -> None:
    assert matches(expression, channel()) is True


def test_unknown_id_is_an_error_not_false() -> None:
    selector = compile_selector("device.attributes['gpu.nvidia.com'].nope == 'x'")
    with pytest.raises(CelEvalError) as info:
        selector.matches(h100())
    assert info.value.expression == "device.attributes['gpu.nvidia.com'].nope == 'x'"
    assert "nope" in info.value.message
    assert str(info.value).startswith("CEL expression \"device.attributes['gpu.nvidia.com'].nope == 'x'\": ")


def test_gpu_selector_on_a_device_of_another_driver_is_an_error_without_the_driver_guard() -> None:
    with pytest.raises(CelEvalError, match="type"):
        matches("device.attributes['gpu.nvidia.com'].type == 'gpu'", channel())
    # With the guard, as NVIDIA's classes write it, && short-circuits before the lookup.
    assert (
        matches(
            "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",
            channel(),
        )
        is False
    )


def test_computed_unknown_domain_is_an_empty_map() -> None:
    assert matches("device.attributes[device.driver + '.other'].size() == 0", h100()) is True
    with pytest.raises(CelEvalError, match="'foo'"):
        matches("device.attributes[device.driver + '.other'].foo == 1", h100())


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("device.attributes['gpu.nvidia.com'].type", 'must evaluate to a bool, got STRING "gpu"'),
        ("dyn(device.capacity['gpu.nvidia.com'].memory)", "must evaluate to a bool, got Quantity"),
        ("device.attributes['gpu.nvidia.com'].driverVersion", "must evaluate to a bool, got Semver"),
        ("device.attributes['gpu.nvidia.com'].productName.compareTo(semver('1.0.0')) > 0", "string"),
        ("device.attributes['gpu.nvidia.com'].driverVersion.startsWith('550')", "Semver"),
        ("quantity('0.5').asInteger() == 0", "cannot convert quantity 500m"),
        ("quantity('9000000000000').mul(100000) == quantity('1')", "out of range"),
        ("dyn(1) / 0 == 1", "divide by zero"),
        ("dyn('abc').matches(dyn('('))", "invalid regular expression"),
    ],
)
def test_evaluation_errors(expression: str, message: str) -> None:
    with pytest.raises(CelEvalError, match="^CEL expression ") as info:
        matches(expression, h100())
    assert message in info.value.message


# ------------------------------------------------------------------------- expressions refused early


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # What the Kubernetes API server refuses, refused here at compile time too.
        ("device.capacity['gpu.nvidia.com'].memory > 5", "(Quantity, int)"),
        ("device.capacity['gpu.nvidia.com'].memory == 5", "(Quantity, int)"),
        ("device.capacity['gpu.nvidia.com'].memory + quantity('1') == quantity('2')", "(Quantity, Quantity)"),
        ("semver('1.0.0') > semver('0.1.0')", "(Semver, Semver)"),
        ("quantity('abc') == quantity('1')", "invalid quantity 'abc'"),
        ("semver('not-a-version').major() == 1", "invalid semantic version 'not-a-version'"),
        ("semver('1.0') == semver('1.0.0')", "invalid semantic version '1.0'"),
        ("device.attributes['a.com'].x.matches('(')", "invalid regular expression"),
        ("device.driver", "must evaluate to bool, not STRING"),
        ("device.capacity['gpu.nvidia.com'].memory", "must evaluate to bool, not Quantity"),
        ("1 + 1", "must evaluate to bool, not INT"),
        ("device.driver ==", "Syntax error"),
        ("device.drivr == 'gpu.nvidia.com'", "undeclared reference"),
        ("devices.driver == 'gpu.nvidia.com'", "undeclared reference"),
        ("nosuchfunction(1)", "undeclared reference"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("true || " * 1400 + "true", "limit is 10240"),
    ],
)
def test_refused_at_compile_time(expression: str, message: str) -> None:
    with pytest.raises(CelCompileError) as info:
        compile_selector(expression)
    assert message in info.value.message
    assert info.value.expression == expression
    assert str(info.value) == f"CEL expression {expression!r}: {info.value.message}"


def test_iteration_budget_stops_runaway_comprehensions() -> None:
    numbers = ", ".join(["0"] * 200)
    selector = compile_selector(f"cel.bind(l, [{numbers}], l.all(a, l.all(b, a == b)))")
    with pytest.raises(CelEvalError, match="Iteration budget exceeded"):
        selector.matches(channel())


def test_dynamic_values_are_only_checked_at_evaluation() -> None:
    # Attributes are dyn, as in Kubernetes: a bad comparison is found only when a device is evaluated.
    selector = compile_selector("device.attributes['gpu.nvidia.com'].driverVersion > 5")
    with pytest.raises(CelEvalError):
        selector.matches(h100())


def test_expression_at_the_length_limit_compiles() -> None:
    expression = "true" + " " * (MAX_EXPRESSION_BYTES - 4)
    assert compile_selector(expression).matches(channel()) is True


def test_non_string_expression_is_refused() -> None:
    with pytest.raises(CelCompileError, match="expected a string"):
        compile_selector(42)  # type: ignore[arg-type]


def test_whole_device_variable_is_not_supported() -> None:
    # Known gap: `device` is declared field by field, so binding the whole object is refused.
    with pytest.raises(CelCompileError, match="undeclared reference to 'device'"):
        compile_selector("cel.bind(d, device, d.driver == 'gpu.nvidia.com')")


def test_string_literals_are_not_mistaken_for_calls() -> None:
    assert matches("device.driver != \"quantity('abc')\"", h100()) is True
    assert matches("device.driver != 'device.attributes[\"x\"]'", h100()) is True


# ----------------------------------------------------------------------------------- device input


def test_qualified_and_unqualified_names() -> None:
    env = device_env(
        "dra.example.com",
        {
            "model": {"string": "a"},
            "other.example.com/model": {"string": "b"},
            "dra.example.com/n": {"int": 3},
        },
        {"dra.example.com/slots": {"value": "4"}, "mem": {"value": "1Gi"}},
    )
    assert matches("device.attributes['dra.example.com'].model == 'a'", env)
    assert matches("device.attributes['other.example.com'].model == 'b'", env)
    assert matches("device.attributes['dra.example.com'].n == 3", env)
    assert matches("device.capacity['dra.example.com'].slots == quantity('4')", env)
    assert matches("device.capacity['dra.example.com'].mem.compareTo(quantity('1024Mi')) == 0", env)


def test_attribute_kinds_and_plain_values() -> None:
    env = device_env(
        "d.example.com",
        {"i": {"int": -7}, "b": {"bool": True}, "s": {"string": "x"}, "v": {"version": "1.2.3-rc.1"}, "p": 5},
        {"c": "1500m", "n": 2},
    )
    assert matches(
        "cel.bind(a, device.attributes['d.example.com'], "
        "a.i == -7 && a.b && a.s == 'x' && a.v.isLessThan(semver('1.2.3')) && a.p == 5)",
        env,
    )
    assert matches("device.capacity['d.example.com'].c == quantity('1.5')", env)
    assert matches("device.capacity['d.example.com'].n.asInteger() == 2", env)


def test_list_attributes_become_lists() -> None:
    env = device_env("d.example.com", {"ids": {"ints": [1, 2]}, "tags": {"strings": ["a"]}}, None)
    assert matches(
        "2 in device.attributes['d.example.com'].ids && 'a' in device.attributes['d.example.com'].tags", env
    )


def test_allow_multiple_allocations() -> None:
    env = device_env("d.example.com", None, None, allow_multiple_allocations=True)
    assert matches("device.allowMultipleAllocations", env)


def test_sub_milli_capacity_rounds_up_to_one_milli() -> None:
    env = device_env("d.example.com", None, {"tiny": {"value": "1n"}})
    assert matches("device.capacity['d.example.com'].tiny == quantity('1m')", env)


@pytest.mark.parametrize(
    ("attributes", "capacity", "message"),
    [
        ({"v": {"version": "550.54"}}, None, "attribute 'v': invalid semantic version '550.54'"),
        ({"v": {"int": "3"}}, None, "attribute 'v': unsupported attribute value int='3'"),
        ({"v": {"int": 1, "string": "x"}}, None, "attribute 'v': expected exactly one of"),
        ({"v": {"float": 1.5}}, None, "attribute 'v': unsupported attribute value"),
        ({"v": 1.5}, None, "attribute 'v': expected an attribute like"),
        ({"/v": {"int": 1}}, None, "not a valid qualified name"),
        ({"": {"int": 1}}, None, "non-empty string"),
        (None, {"mem": {"value": "lots"}}, "capacity 'mem': invalid quantity 'lots'"),
        (None, {"mem": {"requestPolicy": {}}}, "capacity 'mem': expected {'value': <quantity>}"),
        (None, {"mem": {"value": "100E"}}, "capacity 'mem': quantity '100E' is out of range"),
    ],
)
def test_bad_device_input_names_the_field(attributes: dict, capacity: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        device_env("d.example.com", attributes, capacity)
    assert "device of driver 'd.example.com'" in str(info.value)
    assert message in str(info.value)


def test_driver_must_be_a_non_empty_string() -> None:
    with pytest.raises(ValueError, match="driver"):
        device_env("", None, None)


# ------------------------------------------------------------------------------------ caching


def test_compile_is_cached_by_expression_text() -> None:
    expression = "device.driver == 'gpu.nvidia.com'"
    first = compile_selector(expression)
    assert isinstance(first, Selector)
    assert compile_selector(expression) is first
    assert first.expression == expression


def test_compile_errors_are_raised_every_time() -> None:
    for _ in range(3):
        with pytest.raises(CelCompileError):
            compile_selector("device.capacity['x'].memory > 5")


def test_one_device_env_serves_many_selectors() -> None:
    env = h100()
    expressions = [
        "device.driver == 'gpu.nvidia.com'",
        "device.attributes['gpu.nvidia.com'].type == 'gpu'",
        "device.attributes['other.example.com'].size() == 0",
        "device.attributes['gpu.nvidia.com'].type == 'mig'",
    ]
    results = [compile_selector(e).matches(env) for e in expressions]
    # Repeated evaluation on the same env gives the same answers (activations are cached per env).
    assert [compile_selector(e).matches(env) for e in expressions] == results == [True, True, True, False]


# ------------------------------------------------------------------------------------ cost bound

_WORDS = "'" + "x" * 32 + "'"


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("'aaaa'" + ".replace('a', 'aaaa')" * 12 + " == ''", id="replace-chain"),
        pytest.param(
            "cel.bind(a, device.driver + device.driver, "
            + "".join(
                f"cel.bind(x{i}, {'a' if i == 0 else f'x{i - 1}'} + {'a' if i == 0 else f'x{i - 1}'}, "
                for i in range(20)
            )
            + "size(x19) > 0"
            + ")" * 21,
            id="bind-doubling",
        ),
        pytest.param(
            "cel.bind(l, [" + ", ".join([_WORDS] * 60) + "], l.all(a, l.all(b, a.replace('x', a) == b)))",
            id="nested-loops-with-growing-strings",
        ),
        pytest.param(
            "cel.bind(p, device.attributes['gpu.nvidia.com'].productName, "
            "p.replace('', p).replace('', p).replace('', p) == '')",
            id="replace-of-attributes",
        ),
    ],
)
def test_expensive_selectors_are_refused_before_they_run(expression: str) -> None:
    with pytest.raises(CelCompileError, match=r"estimated cost \d+ exceeds the limit of 1000000"):
        compile_selector(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('^nvidia "
        "(a100|h100|h200|b200)')",
        "device.attributes.all(d, device.attributes[d].all(k, k != ''))",
        "cel.bind(p, device.attributes['gpu.nvidia.com'].productName, p + p + p + p == '')",
        "'aaaa'" + ".replace('a', 'aaaa')" * 6 + " != ''",
        "["
        + ", ".join(str(i) for i in range(90))
        + "].exists(i, ["
        + ", ".join(str(i) for i in range(90))
        + "].exists(j, i * j == 42))",
        "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0 && "
        "device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('550.0.0')) >= 0",
    ],
)
def test_ordinary_selectors_stay_well_below_the_cost_bound(expression: str) -> None:
    compile_selector(expression)


def test_cost_estimate_of_a_typical_class_selector() -> None:
    from kai_core.dra.cel import _eval_env
    from kai_core.dra.celcost import estimate_cost

    program = _eval_env().compile(
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
    )
    assert estimate_cost(program.serialize()).cost < 100
