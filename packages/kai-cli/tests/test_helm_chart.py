"""The Helm chart ``deploy/helm/kai-scheduler``, rendered by a real Helm engine (helm-python-sdk
embeds Helm 4's Go library: no helm binary, no network).

What a user installing it relies on: the seed's ``--set scheduler.additionalArgs[0]=...`` flags reach
both Deployments (and DRA stays off without them), every rendered object is valid Kubernetes 1.34
(kubernetes-validate, strict), bad values are refused by values.schema.json with the key named,
the BindRequest and PodGroup CRDs ship in ``crds/`` (byte-identical to ``deploy/crds``, also once
packaged), and the RBAC is least privilege yet enough: the seed scenario is run through fake API
servers (one per component, so each request log is one component's), in-process and as the very
``kai-cli`` command lines the Deployments render, and every request each component made (Lease and
discovery included) must be allowed by the rules the chart gives its ServiceAccount. The chart's flags must also parse
with the installed ``kai-cli``.
"""

from __future__ import annotations

import re
import shlex
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (an embedded Helm engine) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is missing")

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "kai-scheduler"
DEPLOY_CRDS = ROOT / "deploy" / "crds"
SEED = ROOT.parent / "shared" / "seed" / "dra.md"
RELEASE = "kai"
NAMESPACE = "kai-system"
K8S_VERSION = "1.34.0"
GATE = "--feature-gates=DynamicResourceAllocation=true"
#: the flags of shared/seed/dra.md, verbatim
SEED_FLAGS = (
    "--set scheduler.additionalArgs[0]=--feature-gates=DynamicResourceAllocation=true "
    "--set binder.additionalArgs[0]=--feature-gates=DynamicResourceAllocation=true"
)

if not (CHART / "Chart.yaml").is_file():
    pytest.skip(f"{CHART} is absent: the chart is only in a checkout of the repository",
                allow_module_level=True)


# -- rendering ---------------------------------------------------------------------------------------


def set_values(flags: str) -> dict:
    """The values of ``helm install`` flags ``--set a=b --set c=d`` (also ``--set=a=b``).

    Helm parses each ``--set`` into one map in order, which is what parsing them joined by commas
    does (list indexes such as ``args[1]`` then extend the same list)."""
    tokens = shlex.split(flags)
    exprs = []
    while tokens:
        tok = tokens.pop(0)
        if tok == "--set":
            exprs.append(tokens.pop(0))
        elif tok.startswith("--set="):
            exprs.append(tok[len("--set="):])
        else:
            raise ValueError(f"only --set flags are understood here, got {tok!r}")
    return helm.parse_set_string(",".join(exprs)) if exprs else {}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart, flags: str = "", values: dict | None = None, release: str = RELEASE) -> list[dict]:
    """Every object the chart renders (templates only; CRDs are in ``chart.crds``), in file order."""
    merged = set_values(flags)
    for key, value in (values or {}).items():
        merged.setdefault(key, {})
        if isinstance(value, dict):
            merged[key].update(value)
        else:
            merged[key] = value
    manifests = chart.render(merged, name=release, namespace=NAMESPACE)
    objects = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects += [o for o in yaml.safe_load_all(manifests[path]) if o]
    return objects


def notes(chart, flags: str = "") -> str:
    rendered = chart.render(set_values(flags), name=RELEASE, namespace=NAMESPACE)
    return rendered["kai-scheduler/templates/NOTES.txt"]


def builtin(objects: list[dict]) -> list[dict]:
    """The objects of Kubernetes' own kinds (kubernetes-validate's schemas); the chart's default Queues
    are custom resources, checked against the chart's CRD by test_chart_priorities.py."""
    return [o for o in objects if not o["apiVersion"].startswith("scheduling.run.ai/")]


def only(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    have = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(found) == 1, f"expected one {kind} {name}, got {have}"
    return found[0]


def container(objects: list[dict], component: str, release: str = RELEASE) -> dict:
    dep = only(objects, "Deployment", f"{release}-{component}")
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return c


# -- the seed's flags --------------------------------------------------------------------------------


def test_seed_flags_are_the_seeds_own():
    if not SEED.is_file():
        pytest.skip(f"{SEED} is absent: the seed is only in the project's workspace")
    block = re.search(r"```\n(.*?--set scheduler\.additionalArgs.*?)\n```", SEED.read_text(), re.S)
    assert block, "the seed no longer shows the helm --set flags"
    assert shlex.split(block.group(1)) == shlex.split(SEED_FLAGS)


def test_seed_flags_reach_both_deployments(chart):
    objects = render(chart, SEED_FLAGS)
    for component in ("scheduler", "binder"):
        args = container(objects, component)["args"]
        assert args[:2] == ["run", component]
        assert args[-1] == GATE, f"{component}: additionalArgs must come last, after the chart's own flags"
        assert args.count(GATE) == 1
    assert "Dynamic Resource Allocation is on." in notes(chart, SEED_FLAGS)


def test_dra_is_off_without_the_flags(chart):
    objects = render(chart)
    for component in ("scheduler", "binder"):
        args = container(objects, component)["args"]
        assert not [a for a in args if "feature-gates" in a or "DynamicResourceAllocation" in a], args
    text = notes(chart)
    assert "Dynamic Resource Allocation is off" in text and SEED_FLAGS in text


def test_dra_on_one_side_only_is_warned_about(chart):
    text = notes(chart, f"--set scheduler.additionalArgs[0]={GATE}")
    assert "WARNING" in text and "scheduler only" in text


def test_more_additional_args_keep_their_order(chart):
    objects = render(chart, f"--set scheduler.additionalArgs[0]={GATE} --set scheduler.additionalArgs[1]=-v")
    assert container(objects, "scheduler")["args"][-2:] == [GATE, "-v"]


# -- what is deployed --------------------------------------------------------------------------------


def test_deployments_names_labels_and_service_accounts(chart):
    objects = render(chart, release="prod")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] == "Deployment") == [
        ("Deployment", "prod-binder"), ("Deployment", "prod-scheduler")]
    for component in ("scheduler", "binder"):
        dep = only(objects, "Deployment", f"prod-{component}")
        assert dep["metadata"]["namespace"] == NAMESPACE
        assert dep["metadata"]["labels"]["app.kubernetes.io/component"] == component
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == component
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        assert sa == f"prod-{component}"
        assert only(objects, "ServiceAccount", sa)["metadata"]["namespace"] == NAMESPACE
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert not crds, "CRDs belong in crds/, not templates/"


def test_args_are_the_clis_real_cluster_flags(chart):
    objects = render(chart)
    common = ["--in-cluster", "--log-format=json", "--metrics-bind-address=:8080",
              "--health-probe-bind-address=:8081", "--leader-elect"]
    sched = container(objects, "scheduler")
    binder = container(objects, "binder")
    assert sched["command"] == binder["command"] == ["kai-cli"]
    assert sched["args"] == ["run", "scheduler", *common, "--leader-elect-resource-name=kai-scheduler",
                             "--scheduler-name=kai-scheduler"]
    assert binder["args"] == ["run", "binder", *common, "--leader-elect-resource-name=kai-binder",
                              "--workers=10", "--qps=50", "--burst=300", "--scheduler-name=kai-scheduler"]
    objects = render(chart, values={"binder": {"qps": 12.5, "workers": 3}, "logFormat": "text"})
    assert container(objects, "binder")["args"][-4:-1] == ["--workers=3", "--qps=12.5", "--burst=300"]
    assert "--log-format=text" in container(objects, "scheduler")["args"]


def test_args_parse_with_the_installed_cli(chart):
    """The chart's command lines are accepted by ``kai-cli run scheduler|binder`` itself."""
    import click

    from kai_cli.main import cli

    objects = render(chart, SEED_FLAGS)
    run = cli.commands["run"]
    for component in ("scheduler", "binder"):
        cmd = run.commands.get(component) if isinstance(run, click.Group) else None
        if cmd is None or "--in-cluster" not in {o for p in cmd.params for o in p.opts}:
            pytest.skip(f"kai-cli run {component} has no --in-cluster yet (real-cluster support not in)")
        args = container(objects, component)["args"]
        assert args[:2] == ["run", component]
        with cmd.make_context(component, list(args[2:])) as ctx:
            assert ctx.params, f"kai-cli run {component} parsed nothing from {args}"


def test_required_plugins_and_score_weights_reach_the_scheduler(chart):
    """``scheduler.requirePlugins`` and ``scheduler.scoreWeights`` become the scheduler's
    --require-plugin and --score-weight flags (before additionalArgs), which the installed kai-cli
    parses; the binder gets neither."""
    from kai_cli.main import cli

    values = {"scheduler": {"requirePlugins": ["dra-nvidia", "fpga-example"],
                            "scoreWeights": {"kai-core.binpack": 2, "dra-nvidia": 0.5},
                            "additionalArgs": [GATE]}}
    objects = render(chart, values=values)
    args = container(objects, "scheduler")["args"]
    assert args[-6:] == ["--scheduler-name=kai-scheduler", "--require-plugin=dra-nvidia",
                         "--require-plugin=fpga-example", "--score-weight=dra-nvidia=0.5",
                         "--score-weight=kai-core.binpack=2", GATE]
    assert not any(a.startswith(("--require-plugin", "--score-weight")) for a in container(objects, "binder")["args"])
    cmd = cli.commands["run"].commands["scheduler"]
    with cmd.make_context("scheduler", list(args[2:])) as ctx:
        assert ctx.params["require_plugins"] == ("dra-nvidia", "fpga-example")
        assert ctx.params["score_weights"] == ("dra-nvidia=0.5", "kai-core.binpack=2")
    default_args = container(render(chart), "scheduler")["args"]
    assert not any(a.startswith(("--require-plugin", "--score-weight")) for a in default_args)


def test_required_plugins_reach_the_binder(chart):
    """``binder.requirePlugins`` become the binder's --require-plugin flags, which the installed
    kai-cli parses; the scheduler's list stays the scheduler's."""
    from kai_cli.main import cli

    objects = render(chart, values={"binder": {"requirePlugins": ["kai-binder.dra-claims", "fpga-example"]}})
    args = container(objects, "binder")["args"]
    assert [a for a in args if a.startswith("--require-plugin")] == [
        "--require-plugin=kai-binder.dra-claims", "--require-plugin=fpga-example"]
    assert not any(a.startswith("--require-plugin") for a in container(objects, "scheduler")["args"])
    with cli.commands["run"].commands["binder"].make_context("binder", list(args[2:])) as ctx:
        assert ctx.params["require_plugins"] == ("kai-binder.dra-claims", "fpga-example")


def test_probes_ports_and_security(chart):
    objects = render(chart)
    for component in ("scheduler", "binder"):
        dep = only(objects, "Deployment", f"{RELEASE}-{component}")
        pod = dep["spec"]["template"]["spec"]
        c = container(objects, component)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert f"--health-probe-bind-address=:{ports['health']}" in c["args"]
        assert f"--metrics-bind-address=:{ports['metrics']}" in c["args"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # writable scratch space
        assert c["image"] == f"kai:{chart.metadata['appVersion']}"


RESTRICTED = {"bindAddress": {"metrics": "127.0.0.1", "health": "127.0.0.1"}}


@pytest.mark.parametrize("values, metrics, health", [
    (None, ":8080", ":8081"),
    ({"bindAddress": {"metrics": "127.0.0.1", "health": ""}}, "127.0.0.1:8080", ":8081"),
    (RESTRICTED, "127.0.0.1:8080", "127.0.0.1:8081"),
    ({"bindAddress": {"metrics": "::1", "health": "10.0.0.7"}}, "[::1]:8080", "10.0.0.7:8081"),
    ({"metricsEnabled": False}, None, ":8081"),
], ids=["every-address", "metrics-in-the-pod", "both-in-the-pod", "ipv6-and-one-ip", "no-metrics"])
def test_an_operator_can_restrict_where_the_servers_listen(chart, values, metrics, health):
    """bindAddress.metrics/health put the host before each server's port (the kai-cli flags take
    [host]:port); metricsEnabled false serves no /metrics. A health server on a loopback address
    cannot be probed over HTTP by the kubelet, so its probes become exec commands in the container."""
    objects = render(chart, values=values)
    for component in ("scheduler", "binder"):
        c = container(objects, component)
        flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in c["args"] if "bind-address" in a}
        assert flags.get("--metrics-bind-address") == metrics
        assert flags["--health-probe-bind-address"] == health
        assert [p["name"] for p in c["ports"]] == (["metrics", "health"] if metrics else ["health"])
        if health.startswith("127.0.0.1"):
            for probe, path in ((c["livenessProbe"], "/healthz"), (c["readinessProbe"], "/readyz")):
                assert "httpGet" not in probe and f"http://{health}{path}" in probe["exec"]["command"][-1]
        else:
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    for obj in builtin(objects):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    # kai-cli takes them: the flags parse, and so do the addresses
    from kai_cli.main import cli
    from kai_core.observability import parse_bind_address

    for component in ("scheduler", "binder"):
        cmd = cli.commands["run"].commands[component]
        with cmd.make_context(component, list(container(objects, component)["args"][2:])) as ctx:
            for name in ("metrics_bind_address", "health_probe_bind_address"):
                parse_bind_address(ctx.params[name] or "")


def test_the_exec_probes_ask_the_health_server_itself(chart):
    """The command the chart renders for a loopback health server, run as the kubelet would run it:
    success while the server answers 200, failure on 500 (not ready) and when nothing listens."""
    import subprocess

    from kai_core.observability import ObservabilityServer

    synced = []
    ready = {"synced": lambda: None if synced else "not yet"}
    with ObservabilityServer("127.0.0.1:0", health={"loop": lambda: None}, ready=ready) as server:
        objects = render(chart, values={**RESTRICTED, "ports": {"health": server.port}})
        c = container(objects, "scheduler")

        def run(probe) -> int:
            command = probe["exec"]["command"]
            assert command[0] == "python"
            return subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30).returncode

        assert run(c["livenessProbe"]) == 0
        assert run(c["readinessProbe"]) != 0
        synced.append(True)
        assert run(c["readinessProbe"]) == 0
    assert run(c["livenessProbe"]) != 0


def test_leader_election(chart):
    objects = render(chart, values={"scheduler": {"replicas": 3}})
    dep = only(objects, "Deployment", f"{RELEASE}-scheduler")
    assert dep["spec"]["replicas"] == 3 and "--leader-elect" in container(objects, "scheduler")["args"]
    role = only(objects, "Role", f"{RELEASE}-scheduler-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE

    objects = render(chart, values={"binder": {"leaderElection": False}})
    assert "--leader-elect" not in container(objects, "binder")["args"]
    dep = only(objects, "Deployment", f"{RELEASE}-binder")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}  # no overlap of old and new pods on upgrade
    assert not [o for o in objects if o["metadata"]["name"] == f"{RELEASE}-binder-leader-election"]

    refused = r"binder\.replicas is 2 but binder\.leaderElection is false"
    with pytest.raises(helm.HelmRenderError, match=refused):
        render(chart, values={"binder": {"leaderElection": False, "replicas": 2}})


# -- validity ----------------------------------------------------------------------------------------

FULL_VALUES = {
    "image": {"repository": "registry.example.com/ml/kai", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "scheduler": {"replicas": 2, "podAnnotations": {"prometheus.io/scrape": "true"},
                  "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
                  "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
                  "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                      {"weight": 100, "podAffinityTerm": {
                          "topologyKey": "kubernetes.io/hostname",
                          "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "scheduler"}}}}]}},
                  "priorityClassName": "system-cluster-critical",
                  "requirePlugins": ["dra-nvidia"], "scoreWeights": {"kai-core.binpack": 2}},
    "binder": {"leaderElection": False, "workers": 4},
}


@pytest.mark.parametrize("flags, values", [("", None), (SEED_FLAGS, None), (SEED_FLAGS, FULL_VALUES)],
                         ids=["defaults", "seed-flags", "every-value-set"])
def test_every_rendered_object_is_valid_kubernetes(chart, flags, values):
    objects = render(chart, flags, values)
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Deployment", "ClusterRole",
                                            "ClusterRoleBinding", "Role", "RoleBinding", "PriorityClass", "Queue"}
    for obj in builtin(objects):
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc}")


def test_the_crds_are_valid_kubernetes(chart):
    names = []
    for crd in chart.crds:
        obj = yaml.safe_load(crd["data"])
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        names.append(obj["metadata"]["name"])
    assert names == ["bindrequests.scheduling.run.ai", "podgroups.scheduling.run.ai", "queues.scheduling.run.ai"]


def test_lint_is_clean():
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("values, where", [
    ({"scheduler": {"replicas": 0}}, "/scheduler/replicas"),
    ({"scheduler": {"replicas": "two"}}, "/scheduler/replicas"),
    ({"scheduler": {"additionalArgs": GATE}}, "/scheduler/additionalArgs"),
    ({"binder": {"additionalArgs": [1]}}, "/binder/additionalArgs/0"),
    ({"binder": {"qps": -1}}, "/binder/qps"),
    ({"binder": {"workers": 0}}, "/binder/workers"),
    ({"binder": {"leaderElect": True}}, "/binder"),  # misspelt key
    ({"logFormat": "xml"}, "/logFormat"),
    ({"ports": {"health": 70000}}, "/ports/health"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"scheduler": {"schedulerName": "Kai Scheduler"}}, "/scheduler/schedulerName"),
    ({"rbac": {"pluginResources": [{"apiGroup": "*", "resources": ["computedomains"]}]}},
     "/rbac/pluginResources/0/apiGroup"),
    ({"rbac": {"pluginResources": [{"apiGroup": "example.com", "resources": ["*"]}]}},
     "/rbac/pluginResources/0/resources/0"),
    ({"featureGates": "DynamicResourceAllocation=true"}, "additional properties 'featureGates'"),
    ({"bindAddress": {"metrics": "127.0.0.1:8080", "health": ""}}, "/bindAddress/metrics"),
    ({"bindAddress": {"metrics": "", "health": "[::1]"}}, "/bindAddress/health"),
    ({"bindAddress": {"metrics": "", "health": "", "probes": ""}}, "/bindAddress"),
    ({"metricsEnabled": "no"}, "/metricsEnabled"),
    ({"scheduler": {"requirePlugins": "dra-nvidia"}}, "/scheduler/requirePlugins"),
    ({"scheduler": {"requirePlugins": [""]}}, "/scheduler/requirePlugins/0"),
    ({"binder": {"requirePlugins": ["a=b"]}}, "/binder/requirePlugins/0"),
    ({"scheduler": {"scoreWeights": {"kai-core.binpack": -1}}}, "/scheduler/scoreWeights/kai-core.binpack"),
    ({"scheduler": {"scoreWeights": {"kai-core.binpack": "heavy"}}}, "/scheduler/scoreWeights/kai-core.binpack"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_schema_rejects_bad_values(chart, values, where):
    merged = chart.merge_values(values)
    with pytest.raises(helm.HelmValuesError) as exc:
        chart.validate_schema(merged)
    assert where in str(exc.value)
    with pytest.raises(helm.HelmValuesError):
        render(chart, values=values)  # install and template check the schema too


def test_schema_accepts_the_defaults_the_seed_and_every_value(chart):
    for values in (None, set_values(SEED_FLAGS), FULL_VALUES):
        chart.validate_schema(chart.merge_values(values))


# -- the CRD -----------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_copies_of_deploy_crds():
    sources = sorted(p.name for p in DEPLOY_CRDS.glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert sources and copies == sources, "deploy/helm/kai-scheduler/crds/ must hold every deploy/crds/*.yaml"
    for name in sources:
        copy = CHART / "crds" / name
        assert not copy.is_symlink()
        assert copy.read_bytes() == (DEPLOY_CRDS / name).read_bytes(), (
            f"{copy} differs from deploy/crds/{name}: copy it again (cp deploy/crds/{name} {copy.parent}/)")


def test_helm_package_ships_the_crd(tmp_path):
    archive = Path(helm.package(CHART, destination=tmp_path))
    assert archive.name == "kai-scheduler-0.1.0.tgz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        for crd in DEPLOY_CRDS.glob("*.yaml"):
            member = tar.extractfile(f"kai-scheduler/crds/{crd.name}")
            assert member is not None and member.read() == crd.read_bytes()
    assert "kai-scheduler/values.schema.json" in names
    with helm.Chart.load(archive) as packaged:
        assert [c["name"] for c in packaged.crds] == ["crds/scheduling.run.ai_bindrequests.yaml",
                                                      "crds/scheduling.run.ai_podgroups.yaml",
                                                      "crds/scheduling.run.ai_queues.yaml"]
        assert render(packaged, SEED_FLAGS) == render_dir(SEED_FLAGS)


def render_dir(flags: str) -> list[dict]:
    with helm.Chart.load(CHART) as c:
        return render(c, flags)


# -- RBAC --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One API request as the authorizer sees it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {res}{'.' + self.group if self.group else ''}{where}"


class Rbac:
    """The RBAC authorizer over rendered Roles, ClusterRoles and their bindings, for ServiceAccounts.

    A ClusterRoleBinding grants its role everywhere; a RoleBinding only in its own namespace. Rules
    with resourceNames never match create, list or watch (the name is not known then)."""

    def __init__(self, objects: Iterable[dict]) -> None:
        objects = list(objects)
        self.roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                      for o in objects if o["kind"] in ("Role", "ClusterRole")}
        self.bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]

    def rules(self, sa: str, namespace: str = NAMESPACE) -> list[tuple[dict, str | None]]:
        """(rule, namespace it applies in, or None for everywhere) granted to ServiceAccount ``sa``."""
        out = []
        for b in self.bindings:
            if not any(s["kind"] == "ServiceAccount" and s["name"] == sa and s.get("namespace") == namespace
                       for s in b.get("subjects") or []):
                continue
            ref = b["roleRef"]
            scope = b["metadata"]["namespace"] if b["kind"] == "RoleBinding" else None
            role_ns = b["metadata"]["namespace"] if ref["kind"] == "Role" else ""
            role = self.roles.get((ref["kind"], role_ns, ref["name"]))
            assert role is not None, f"{b['kind']} {b['metadata']['name']} refers to a missing {ref['kind']}"
            out += [(rule, scope) for rule in role.get("rules") or []]
        return out

    def allows(self, sa: str, req: Request) -> bool:
        resource = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
        for rule, scope in self.rules(sa):
            if scope is not None and req.namespace != scope:
                continue
            if not (_match(rule.get("verbs"), req.verb) and _match(rule.get("apiGroups"), req.group)
                    and _match(rule.get("resources"), resource)):
                continue
            names = rule.get("resourceNames")
            unnamed = req.verb in ("create", "list", "watch", "deletecollection")
            if names and (unnamed or req.name not in names):
                continue
            return True
        return False

    def grants(self, sa: str) -> dict[tuple[str, str], set[str]]:
        """(apiGroup, resource) -> verbs, over every rule granted to ``sa``."""
        table: dict[tuple[str, str], set[str]] = {}
        for rule, _scope in self.rules(sa):
            for group in rule.get("apiGroups") or []:
                for res in rule.get("resources") or []:
                    table.setdefault((group, res), set()).update(rule.get("verbs") or [])
        return table


def _match(allowed: list[str] | None, value: str) -> bool:
    return bool(allowed) and ("*" in allowed or value in allowed)


READ = {"get", "list", "watch"}
EXPECTED_SCHEDULER = {
    ("", "pods"): READ | {"delete"},  # the eviction actions delete the pods they evict
    ("", "nodes"): READ,
    ("", "namespaces"): READ,
    ("", "persistentvolumes"): READ,  # VolumeBinding: read only, the binder binds
    ("", "persistentvolumeclaims"): READ,
    ("storage.k8s.io", "storageclasses"): READ,
    ("", "pods/status"): {"update", "patch"},
    ("", "events"): {"create"},
    ("scheduling.run.ai", "bindrequests"): READ | {"create", "delete"},
    ("scheduling.run.ai", "podgroups"): READ | {"patch"},  # annotations: stale since, last eviction
    ("scheduling.run.ai", "podgroups/status"): {"patch"},  # schedulingConditions: why a group waits
    ("scheduling.run.ai", "queues"): READ,
    ("scheduling.run.ai", "queues/status"): {"update"},
    ("resource.k8s.io", "resourceclaims"): READ,
    ("resource.k8s.io", "resourceclaimtemplates"): READ,
    ("resource.k8s.io", "resourceslices"): READ,
    ("resource.k8s.io", "deviceclasses"): READ,
    ("resource.nvidia.com", "computedomains"): READ,
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}
EXPECTED_BINDER = {
    ("", "pods"): READ,
    ("", "pods/binding"): {"create"},
    ("", "pods/status"): {"update", "patch"},  # the PodBound condition
    ("", "nodes"): READ,  # the selected node and its labels are checked before any write (watched)
    ("", "namespaces"): {"get"},  # only for adminAccess requests: may the namespace have it?
    # volume binding before the pod: a PV's claimRef, a claim's volumeName or selected node
    ("", "persistentvolumes"): {"get", "update"},
    ("", "persistentvolumeclaims"): {"get", "update"},
    # update: the finalizer; create and delete: a pod's special claim for DRA-backed extended resources
    ("resource.k8s.io", "resourceclaims"): READ | {"update", "create", "delete"},
    ("resource.k8s.io", "resourceclaims/status"): {"update"},
    ("resource.k8s.io", "resourceclaims/binding"): {"update"},
    # the allocated devices must exist and match the claim: watched, never written
    ("resource.k8s.io", "resourceslices"): {"list", "watch"},
    ("resource.k8s.io", "deviceclasses"): {"list", "watch"},
    ("scheduling.run.ai", "bindrequests"): READ,
    ("scheduling.run.ai", "bindrequests/status"): {"update", "patch"},
    ("", "events"): {"create", "patch"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}


@pytest.fixture(scope="module")
def rbac(chart) -> Rbac:
    return Rbac(render(chart, SEED_FLAGS))


def test_rbac_lists_exact_verbs_without_wildcards(chart, rbac):
    objects = render(chart, SEED_FLAGS)
    for o in objects:
        for rule in o.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                wild = [v for v in rule.get(key) or [] if "*" in v]
                assert not wild, f"{o['kind']} {o['metadata']['name']}: {rule}"
    assert rbac.grants(f"{RELEASE}-scheduler") == EXPECTED_SCHEDULER
    assert rbac.grants(f"{RELEASE}-binder") == EXPECTED_BINDER
    # its own Lease only, in the release's namespace; everything else through the ClusterRole
    sched = f"{RELEASE}-scheduler"
    def lease(verb: str, name: str = "", namespace: str = NAMESPACE) -> Request:
        return Request(verb, "coordination.k8s.io", "leases", namespace=namespace, name=name)

    for req in (lease("create"), lease("get", sched), lease("update", sched)):
        assert rbac.allows(sched, req), req
    for req in (lease("update", f"{RELEASE}-binder"), lease("update", sched, "kube-system"),
                lease("create", "", "kube-system"), lease("list")):
        assert not rbac.allows(sched, req), req


def test_the_binder_reads_the_devices_but_never_writes_them(rbac):
    binder = f"{RELEASE}-binder"
    for resource in ("resourceslices", "deviceclasses"):
        assert rbac.allows(binder, Request("watch", "resource.k8s.io", resource))
        for verb in ("create", "update", "patch", "delete"):
            assert not rbac.allows(binder, Request(verb, "resource.k8s.io", resource)), (verb, resource)
    for verb in ("create", "update", "patch", "delete"):
        assert not rbac.allows(binder, Request(verb, "", "nodes", name="n1"))
    assert not rbac.allows(binder, Request("list", "", "namespaces"))  # one namespace at a time, by name


def test_the_binder_serves_the_schedulers_name(chart):
    objects = render(chart, values={"scheduler": {"schedulerName": "gpu-batch"}})
    assert "--scheduler-name=gpu-batch" in container(objects, "scheduler")["args"]
    assert "--scheduler-name=gpu-batch" in container(objects, "binder")["args"]


def test_the_scheduler_can_never_bind_a_pod(rbac):
    sched = f"{RELEASE}-scheduler"
    assert not [k for k in rbac.grants(sched) if k[1] == "pods/binding" or k[1].startswith("pods/")
                and k[1] != "pods/status"]
    assert not rbac.allows(sched, Request("create", "", "pods", "binding", "default", "p"))
    assert not rbac.allows(sched, Request("update", "resource.k8s.io", "resourceclaims", "status", "default"))
    assert rbac.allows(f"{RELEASE}-binder", Request("create", "", "pods", "binding", "default", "p"))


def test_rbac_create_false_renders_no_roles(chart):
    objects = render(chart, values={"rbac": {"create": False}})
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io")]
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Deployment", "PriorityClass", "Queue"}


def test_scheduler_may_read_every_kind_plugins_declare(chart, rbac):
    from kai_core.cluster import plugin_crds
    from kai_core.plugins import build_plugin_manager

    crds = plugin_crds(build_plugin_manager())
    assert crds, "no plugin declares a kind: is kai-dra-nvidia installed?"
    for crd in crds:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for verb in sorted(READ):
            req = Request(verb, group, plural, namespace="default")
            assert rbac.allows(f"{RELEASE}-scheduler", req), (
                f"the scheduler cannot {verb} {plural}.{group}: add it to rbac.pluginResources (values.yaml)")
        for verb in ("create", "update", "patch", "delete"):
            assert not rbac.allows(f"{RELEASE}-scheduler", Request(verb, group, plural, namespace="default"))


# the requests the API server serves to every authenticated user (system:discovery)
DISCOVERY = re.compile(r"^/(version|api(/[^/?]+)?|apis(/[^/?]+){0,2})/?(\?.*)?$")
GRANULAR_CLAIM_STATUS = ("resourceclaims", "resource.k8s.io")


def as_request(record) -> Request:
    resource, _, group = record.resource.partition(".")
    return Request(record.verb, group, resource, record.subresource, record.namespace, record.name)


def check_allowed(rbac: Rbac, sa: str, records) -> list[Request]:
    """The requests of ``records`` (RequestRecords) the chart does not allow ``sa`` to make."""
    denied = []
    for rec in records:
        if not rec.verb:
            assert DISCOVERY.match(rec.path), f"{sa}: {rec.method} {rec.path} is no resource nor discovery"
            continue
        req = as_request(rec)
        if not rbac.allows(sa, req):
            denied.append(req)
        # Kubernetes 1.36 authorizes a claim status write a second time, on resourceclaims/binding
        if (req.resource, req.group) == GRANULAR_CLAIM_STATUS and req.subresource == "status":
            extra = Request(req.verb, req.group, req.resource, "binding", req.namespace, req.name)
            if not rbac.allows(sa, extra):
                denied.append(extra)
    return sorted(set(denied), key=str)


@dataclass
class ScenarioCalls:
    scheduler: list
    binder: list
    node: str


def run_seed_over_http(gates: str) -> ScenarioCalls:
    """The seed scenario (the built-in demo: GB200 nodes, a ComputeDomain, the IMEX pod) in an
    embedded cluster served by two fake API servers, one for the scheduler's client and one for
    the binder's, so each server's request log is one component's."""
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    from kai_binder.binder import RECOMMENDED_OPTIONS, Binder, add_binder_hookspecs
    from kai_core.api.features import FeatureGates
    from kai_core.api.resources import RES_PODS
    from kai_core.client.store import KubernetesStore
    from kai_core.cluster import EmbeddedCluster, plugin_crds
    from kai_core.plugins import build_plugin_manager
    from kai_core.scheduler.cycle import Scheduler, SchedulerConfig
    from kai_core.testing import FakeApiServer
    from kai_dra_nvidia.demo import demo_manifests_path

    pm = build_plugin_manager()
    add_binder_hookspecs(pm)
    features = FeatureGates.parse(gates)
    cluster = EmbeddedCluster(pm)
    cluster.load(demo_manifests_path())
    servers = [FakeApiServer(cluster.store, bookmark_interval=0.2).start() for _ in range(2)]
    stores = []
    try:
        for server in servers:
            st = KubernetesStore(server.client_configuration(), backoff_base=0.01, backoff_cap=0.05,
                                 sync_timeout=15)
            for crd in plugin_crds(pm):
                st.add_crd(crd)
            stores.append(st)
        scheduler = Scheduler(stores[0], pm, SchedulerConfig(features=features))
        binder = Binder(stores[1], pm, features, **{**RECOMMENDED_OPTIONS, "qps": 0})  # as kai-cli builds it
        node = ""
        for _ in range(10):
            cluster.reconcile_controllers()  # the cluster's own controllers: not through either server
            scheduler.run_cycle()
            binder.run_once()
            node = cluster.store.get(RES_PODS, "gpu-imex-pod", "default")["spec"].get("nodeName", "")
            if node:
                break
    finally:
        for st in stores:
            st.close()
        for server in servers:
            server.stop()
    return ScenarioCalls(list(servers[0].requests), list(servers[1].requests), node)


@pytest.mark.parametrize("flags", [SEED_FLAGS, ""], ids=["dra-on", "dra-off"])
def test_rbac_allows_every_request_of_the_seed_scenario(chart, flags):
    dra = bool(flags)
    calls = run_seed_over_http("DynamicResourceAllocation=true" if dra else "")
    rbac = Rbac(render(chart, flags))
    sched = {str(as_request(r)) for r in calls.scheduler if r.verb}
    bound = {str(as_request(r)) for r in calls.binder if r.verb}
    if dra:
        assert calls.node, "the seed's pod was not bound: the scenario proves nothing"
        assert "create bindrequests.scheduling.run.ai in default" in sched
        assert "list resourceslices.resource.k8s.io" in sched
        assert {"create pods/binding in default", "update resourceclaims/status.resource.k8s.io in default",
                "update bindrequests/status.scheduling.run.ai in default"} <= bound
        # what the binder reports (PodBound condition, an Event) and checks (the node) is covered too
        assert {"patch pods/status in default", "create events in default", "get nodes"} <= bound
    else:
        assert not calls.node
        assert {"update pods/status in default", "create events in default"} <= sched
    for component, records in (("scheduler", calls.scheduler), ("binder", calls.binder)):
        denied = check_allowed(rbac, f"{RELEASE}-{component}", records)
        assert not denied, f"the chart does not allow the {component} to: {', '.join(map(str, denied))}"
    # the check has teeth: the binder's requests are not the scheduler's to make
    if dra:
        denied = {str(r) for r in check_allowed(rbac, f"{RELEASE}-scheduler", calls.binder)}
        assert "create pods/binding in default" in denied
        assert "update resourceclaims/binding.resource.k8s.io in default" in denied


def cluster_command(args: list[str], kubeconfig: Path) -> list[str]:
    """A Deployment's ``kai-cli`` arguments turned into a local command line: ``--in-cluster``
    becomes ``--kubeconfig FILE`` and the servers listen on free loopback ports."""
    out = [sys.executable, "-m", "kai_cli.main"]
    for arg in args:
        if arg == "--in-cluster":
            out.append(f"--kubeconfig={kubeconfig}")
        elif arg.startswith(("--metrics-bind-address=", "--health-probe-bind-address=")):
            out.append(arg.split("=", 1)[0] + "=127.0.0.1:0")
        else:
            out.append(arg)
    return out


def test_the_deployments_command_lines_run_the_seed_within_their_rbac(chart, tmp_path):
    """The scheduler's and the binder's command lines exactly as the chart renders them with the
    seed's flags (but --kubeconfig for --in-cluster), run as two processes against fake API servers
    over the seed scenario: the pod is bound, and every request each made (discovery, the Lease,
    the watches) is one the chart's RBAC allows its ServiceAccount."""
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed")
    import subprocess
    import time

    from kai_cli.main import cli
    from kai_core.api.resources import RES_PODS
    from kai_core.cluster import EmbeddedCluster
    from kai_core.plugins import build_plugin_manager
    from kai_core.testing import FakeApiServer
    from kai_dra_nvidia.demo import demo_manifests_path

    run = cli.commands["run"]
    if "--in-cluster" not in {o for p in run.commands["binder"].params for o in p.opts}:
        pytest.skip("kai-cli run binder has no --in-cluster yet (real-cluster support not in)")
    objects = render(chart, SEED_FLAGS)
    rbac = Rbac(objects)
    cluster = EmbeddedCluster(build_plugin_manager())
    cluster.load(demo_manifests_path())
    cluster.store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    servers = {c: FakeApiServer(cluster.store, bookmark_interval=0.2).start()
               for c in ("scheduler", "binder")}
    procs = {}
    try:
        for component, server in servers.items():
            kubeconfig = server.write_kubeconfig(tmp_path / f"{component}.kubeconfig", namespace=NAMESPACE)
            cmd = cluster_command(container(objects, component)["args"], kubeconfig)
            with (tmp_path / f"{component}.log").open("w") as log:
                procs[component] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # a bound, not an expectation
        node = ""
        while not node and time.monotonic() < deadline:
            exited = [c for c, p in procs.items() if p.poll() is not None]
            assert not exited, f"{exited} exited: {(tmp_path / f'{exited[0]}.log').read_text()[-3000:]}"
            cluster.reconcile_controllers()  # the cluster's own controllers
            node = cluster.store.get(RES_PODS, "gpu-imex-pod", "default")["spec"].get("nodeName", "")
            time.sleep(0.05)
        assert node, "the seed's pod was not bound: " + (tmp_path / "scheduler.log").read_text()[-3000:]
        # the chart sets no --backoff-limit: none is written, as KAI's scheduler writes none
        from kai_core.api.resources import RES_BIND_REQUESTS

        [br] = cluster.store.list(RES_BIND_REQUESTS)[0]
        assert "backoffLimit" not in br["spec"]
    finally:
        for p in procs.values():
            p.terminate()  # SIGTERM, as the kubelet does: each releases its Lease
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for server in servers.values():
            server.stop()
    calls = {c: {str(as_request(r)) for r in s.requests if r.verb} for c, s in servers.items()}
    assert f"update leases.coordination.k8s.io in {NAMESPACE}" in calls["scheduler"]
    assert "create pods/binding in default" in calls["binder"]
    # the node check reads the binder's watch of the nodes (kai-cli run binder reads them from its cache)
    assert {"patch pods/status in default", "create events in default", "list nodes", "watch nodes"} <= calls["binder"]
    for component, server in servers.items():
        denied = check_allowed(rbac, f"{RELEASE}-{component}", server.requests)
        assert not denied, f"the chart does not allow the {component} to: {', '.join(map(str, denied))}"


def test_discovery_pattern():
    # the discovery paths every authenticated user may read, and nothing else
    for ok in ("/api", "/apis", "/api/v1", "/apis/resource.k8s.io", "/apis/resource.k8s.io/v1", "/version"):
        assert DISCOVERY.match(ok), ok
    for bad in ("/api/v1/pods", "/apis/resource.k8s.io/v1/resourceclaims", "/metrics"):
        assert not DISCOVERY.match(bad), bad


# -- the image ---------------------------------------------------------------------------------------


def test_dockerfile_matches_the_chart(chart):
    """The image cannot be built here; what the chart relies on must at least agree with it."""
    dockerfile = ROOT / "deploy" / "Dockerfile"
    text = dockerfile.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    runtime = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    [user] = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER, so runAsNonRoot can be verified"
    assert int(uid) == chart.values["podSecurityContext"]["runAsUser"]
    assert 'ENTRYPOINT ["kai-cli"]' in runtime
    assert any("deploy/wheels.py build" in ln for ln in lines)  # the wheels tox -e wheels tests
    [expose] = [ln.split()[1:] for ln in runtime if ln.startswith("EXPOSE ")]
    assert sorted(map(int, expose)) == sorted(chart.values["ports"].values())
