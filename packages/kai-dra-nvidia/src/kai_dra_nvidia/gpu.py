"""NVIDIA GPUs (``gpu.nvidia.com``): opaque config validation and the placement preferences that
keep whole GPUs and NVLink cliques free for the jobs that need them.

**Configs.** A claim or DeviceClass hands the GPU driver its settings as ``config[].opaque``
entries with ``driver: gpu.nvidia.com`` and ``parameters`` of apiVersion
``resource.nvidia.com/v1beta1``: ``GpuConfig{sharing}`` for full GPUs, ``MigDeviceConfig{sharing}``
for MIG devices, ``VfioDeviceConfig{}`` for passthrough. ``sharing`` is ``{strategy: TimeSlicing |
MPS, timeSlicingConfig: {interval: Default | Short | Medium | Long}, mpsConfig:
{defaultActiveThreadPercentage: 0..100, defaultPinnedDeviceMemoryLimit: quantity,
defaultPerDevicePinnedMemoryLimit: {device: quantity}}}``; MIG devices take no
``timeSlicingConfig``, and each strategy only its own settings. The driver decodes strictly and
refuses a bad config only when the node prepares the device, leaving the pod in
``ContainerCreating``; :func:`gpu_config_problems` says what is wrong before the pod is placed.
(Whether a strategy is enabled is a feature gate of the driver's, which the scheduler cannot see.)

**Devices.** :func:`rank_devices` (``kai_rank_devices``) makes the allocator carve MIG devices out
of the GPUs already most used (by the counters they share, or the MIG devices of the same parent
already taken), best fit first, so GPUs nobody touched stay whole.

**Nodes.** :func:`node_scores` (``kai_score_nodes``), for pods wanting GPUs but no ComputeDomain,
prefers nodes outside NVLink cliques, then cliques already broken into by a domain, so a free clique
stays whole for a multi-node domain; for pods wanting MIG devices it also prefers nodes whose GPUs
are already partly carved.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from kai_core.api.quantity import QuantityError, parse_quantity
from kai_core.api.resources import GPU_RESOURCE
from kai_core.framework.snapshot import NodeInfo, Snapshot
from kai_dra_nvidia.computedomain import CLIQUE_LABEL
from kai_dra_nvidia.config import API_VERSION, header_problems, type_name

GPU_DRIVER = "gpu.nvidia.com"
GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
GPU_CONFIG_KIND = "GpuConfig"
MIG_CONFIG_KIND = "MigDeviceConfig"
VFIO_CONFIG_KIND = "VfioDeviceConfig"
STRATEGIES = ("TimeSlicing", "MPS")
INTERVALS = ("Default", "Short", "Medium", "Long")
_KINDS = {GPU_CONFIG_KIND: ("sharing",), MIG_CONFIG_KIND: ("sharing",), VFIO_CONFIG_KIND: ()}
#: the device class each kind is for
_KIND_CLASS = {GPU_CONFIG_KIND: GPU_CLASS, MIG_CONFIG_KIND: MIG_CLASS}
_MEBIBYTE = 1024 * 1024


def _unknown(obj: dict, known: Iterable[str], where: str) -> list[str]:
    known = tuple(known)
    unknown = sorted(str(k) for k in obj if k not in known)
    if not unknown:
        return []
    has = ", ".join(known) if known else "no fields"
    return [f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} in {where} "
            f"(it has {has})"]


def _memory_limit(value: object, where: str) -> list[str]:
    try:
        amount = parse_quantity(value)  # type: ignore[arg-type]
    except (QuantityError, TypeError, ValueError):
        return [f"{where} {value!r} is not a quantity (e.g. 10Gi)"]
    if amount < _MEBIBYTE:
        return [f"{where} {value!r} is below 1Mi (the driver sets limits in whole megabytes)"]
    return []


def _mps_problems(mps: object, where: str) -> list[str]:
    if not isinstance(mps, dict):
        return [f"{where} must be an object, got {type_name(mps)}"]
    problems = _unknown(mps, ("defaultActiveThreadPercentage", "defaultPinnedDeviceMemoryLimit",
                              "defaultPerDevicePinnedMemoryLimit"), where)
    pct = mps.get("defaultActiveThreadPercentage")
    if pct is not None:
        if not isinstance(pct, int) or isinstance(pct, bool):
            problems.append(f"{where}.defaultActiveThreadPercentage must be a whole number, got {type_name(pct)}")
        elif not 0 <= pct <= 100:
            problems.append(f"{where}.defaultActiveThreadPercentage {pct} is not between 0 and 100")
    if mps.get("defaultPinnedDeviceMemoryLimit") is not None:
        problems += _memory_limit(mps["defaultPinnedDeviceMemoryLimit"], f"{where}.defaultPinnedDeviceMemoryLimit")
    per_device = mps.get("defaultPerDevicePinnedMemoryLimit")
    if per_device is not None:
        if not isinstance(per_device, dict):
            problems.append(f"{where}.defaultPerDevicePinnedMemoryLimit must map device indexes or UUIDs to "
                            f"quantities, got {type_name(per_device)}")
        else:
            for device, limit in per_device.items():
                problems += _memory_limit(limit, f"{where}.defaultPerDevicePinnedMemoryLimit[{device!r}]")
    return problems


def _sharing_problems(sharing: object, kind: str) -> list[str]:
    where = "parameters.sharing"
    if not isinstance(sharing, dict):
        return [f"{where} must be an object, got {type_name(sharing)}"]
    mig = kind == MIG_CONFIG_KIND
    known = ("strategy", "mpsConfig") if mig else ("strategy", "timeSlicingConfig", "mpsConfig")
    problems = _unknown(sharing, known, f"{where} of a {kind}")
    strategy = sharing.get("strategy")
    if strategy is None:
        problems.append(f"{where}.strategy is required ({' or '.join(STRATEGIES)})")
    elif strategy not in STRATEGIES:
        problems.append(f"{where}.strategy {strategy!r} is not {' or '.join(STRATEGIES)}")
    if strategy == "TimeSlicing":
        if sharing.get("mpsConfig") is not None:
            problems.append(f"{where}.mpsConfig cannot be used with the TimeSlicing strategy")
        ts = sharing.get("timeSlicingConfig")
        if ts is not None and not mig:
            if not isinstance(ts, dict):
                problems.append(f"{where}.timeSlicingConfig must be an object, got {type_name(ts)}")
            else:
                problems += _unknown(ts, ("interval",), f"{where}.timeSlicingConfig")
                interval = ts.get("interval")
                if interval is not None and interval not in INTERVALS:
                    problems.append(f"{where}.timeSlicingConfig.interval {interval!r} is not one of "
                                    f"{', '.join(INTERVALS)}")
    elif strategy == "MPS":
        if sharing.get("timeSlicingConfig") is not None and not mig:
            problems.append(f"{where}.timeSlicingConfig cannot be used with the MPS strategy")
        if sharing.get("mpsConfig") is not None:
            problems += _mps_problems(sharing["mpsConfig"], f"{where}.mpsConfig")
    return problems


def gpu_parameters_problems(parameters: object) -> list[str]:
    """What is wrong with the ``parameters`` of one ``gpu.nvidia.com`` opaque config; empty when
    valid. Each problem names the field, e.g. ``"parameters.sharing.strategy 'Fair' is not
    TimeSlicing or MPS"``."""
    kinds = ", ".join(_KINDS)
    if not isinstance(parameters, dict):
        return [f"parameters must be an object with apiVersion {API_VERSION} and kind {kinds}, got "
                f"{type_name(parameters)}"]
    problems = header_problems(parameters, tuple(_KINDS))
    kind = parameters.get("kind")
    if kind not in _KINDS:
        return problems
    problems += _unknown({k: v for k, v in parameters.items() if k not in ("apiVersion", "kind")},
                         _KINDS[kind], kind)
    if parameters.get("sharing") is not None and "sharing" in _KINDS[kind]:
        problems += _sharing_problems(parameters["sharing"], kind)
    return problems


def gpu_config_problems(parameters: object, request_classes: dict[str, str]) -> list[str]:
    """What is wrong with one ``gpu.nvidia.com`` opaque config (empty: valid): its parameters, and
    a kind wrong for the devices it applies to (a ``GpuConfig`` on ``mig.nvidia.com`` devices, a
    ``MigDeviceConfig`` on full GPUs). ``request_classes`` maps the requests it applies to to their
    DeviceClass (for a DeviceClass's own config: ``{"": its name}``)."""
    problems = gpu_parameters_problems(parameters)
    if problems or not isinstance(parameters, dict):
        return problems
    kind = parameters.get("kind")
    wanted = _KIND_CLASS.get(kind)
    for name, cls in request_classes.items():
        if wanted and cls in _KIND_CLASS.values() and cls != wanted:
            right = next(k for k, c in _KIND_CLASS.items() if c == cls)
            who = f"request {name!r} asks for" if name else "the DeviceClass selects"
            return [f"a {kind} applies to {wanted} devices but {who} {cls} devices (use a {right})"]
    return []


# -- devices ----------------------------------------------------------------------------------------


_TYPE = f"{GPU_DRIVER}/type"
_MIG = ("string", "mig")


def _attribute(device, name: str) -> object:
    """A scalar attribute's value; None when missing or list-valued (not what these names hold)."""
    value = device.attributes.get(f"{GPU_DRIVER}/{name}")
    return value[1] if type(value) is tuple else None


#: NVIDIA's DeviceClasses that never select a MIG device (a request of these needs no ranking)
NO_MIG_CLASSES = frozenset({GPU_CLASS, "vfio.gpu.nvidia.com", "compute-domain-default-channel.nvidia.com",
                            "compute-domain-daemon.nvidia.com"})


def may_want_mig(claims: list[dict]) -> bool:
    """Whether some request of ``claims`` uses a DeviceClass that may select MIG devices (any class
    but NVIDIA's full-GPU, VFIO and compute-domain ones)."""
    for claim in claims:
        for request in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []:
            if not isinstance(request, dict):
                continue
            subs = [request["exactly"]] if isinstance(request.get("exactly"), dict) else (
                request.get("firstAvailable") or [])
            for sub in subs:
                if not isinstance(sub, dict) or sub.get("deviceClassName") not in NO_MIG_CLASSES:
                    return True
    return False


def rank_devices(devices: list, snapshot: Snapshot, claims: list[dict] | None = None) -> dict | None:
    """``{DeviceId: score}`` preferring MIG devices on the GPUs already most used (0..100), or None
    when no MIG device of the GPU driver is among ``devices``. Called for every pod with claims, so
    ``claims`` asking only for classes that cannot hold a MIG device skip the look at ``devices``."""
    if claims is not None and not may_want_mig(claims):
        return None
    migs = [d for d in devices if d.attributes.get(_TYPE) == _MIG]
    if not migs:
        return None
    in_use = snapshot.devices_in_use
    inventory = snapshot.dra
    used_share: dict[tuple, float] = {}
    siblings: dict[tuple[str, str], dict[str, int]] = {}
    scores = {}
    for d in migs:
        if d.consumes:
            key = (d.id.driver, d.id.pool, d.consumes[0][0])
            share = used_share.get(key)
            if share is None:
                share = used_share[key] = _counter_share_used(inventory.pool_of(d), key[2], in_use)
            scores[d.id] = round(100.0 * share, 3)
            continue
        pool = (d.id.driver, d.id.pool)
        busy = siblings.get(pool)
        if busy is None:
            busy = siblings[pool] = _busy_by_parent(inventory.pool_of(d), in_use)
        parent = _attribute(d, "parentUUID")
        scores[d.id] = min(100.0, 10.0 * busy.get(parent, 0)) if isinstance(parent, str) else 0.0
    return scores


def _counter_share_used(pool, counter_set: str, in_use: set) -> float:
    """How much of ``counter_set`` devices in use consume: the mean, over its counters, of the
    fraction consumed (a GPU's compute, memory and each of its memory slices weigh alike)."""
    total = pool.counter_sets.get(counter_set) or {}
    used: dict[str, float] = {}
    for device in pool.counter_devices:
        if device.id not in in_use:
            continue
        for set_name, counters in device.consumes:
            if set_name == counter_set:
                for counter, amount in counters.items():
                    used[counter] = used.get(counter, 0) + float(amount)
    shares = [min(1.0, used.get(c, 0.0) / float(v)) for c, v in total.items() if v]
    return sum(shares) / len(shares) if shares else 0.0


def _busy_by_parent(pool, in_use: set) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in pool.slices:
        for device in s.devices:
            if device.id in in_use:
                parent = _attribute(device, "parentUUID")
                if isinstance(parent, str):
                    out[parent] = out.get(parent, 0) + 1
    return out


# -- nodes ------------------------------------------------------------------------------------------


def wanted_gpu_classes(pod: dict, snapshot: Snapshot) -> set[str]:
    """The NVIDIA GPU DeviceClasses the pod's unallocated claims ask for (``gpu.nvidia.com``,
    ``mig.nvidia.com``)."""
    from kai_core.api.claims import claim_name_for

    namespace = pod["metadata"].get("namespace", "")
    out: set[str] = set()
    for rc in (pod.get("spec") or {}).get("resourceClaims") or []:
        name = claim_name_for(pod, rc.get("name")) if isinstance(rc, dict) else None
        claim = snapshot.claims.get((namespace, name)) if name else None
        if claim is None or (claim.get("status") or {}).get("allocation"):
            continue
        for request in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or []:
            if not isinstance(request, dict):
                continue
            for sub in [request.get("exactly")] + list(request.get("firstAvailable") or []):
                cls = sub.get("deviceClassName") if isinstance(sub, dict) else None
                if cls in (GPU_CLASS, MIG_CLASS):
                    out.add(cls)
    return out


def node_scores(pod: dict, nodes: list[NodeInfo], snapshot: Snapshot, view) -> dict | None:
    """Scores 0..100 for a pod of no ComputeDomain that wants GPUs (see the module docstring);
    ``view`` is the cycle's :class:`kai_dra_nvidia.domains.DomainView` (cliques and the domains in
    them), or None with DRA off. None for a pod wanting no GPU, or when nothing tells nodes apart."""
    classes = wanted_gpu_classes(pod, snapshot) if snapshot.features.dra else set()
    wants_gpu = bool(classes) or snapshot.requests_of(pod).get(GPU_RESOURCE, 0) > 0
    if not wants_gpu:
        return None
    parts: list[dict[str, float]] = []
    sizes = view.clique_sizes() if view is not None else _clique_sizes(snapshot)
    if sizes:
        broken = view.broken_cliques() if view is not None else {}
        if broken or sum(sizes.values()) < len(snapshot.nodes):
            parts.append({n.name: 50.0 * broken.get(label, 0.0) if (label := n.labels.get(CLIQUE_LABEL)) else 100.0
                          for n in nodes})
    if MIG_CLASS in classes:
        parts.append(_carved_scores(nodes, snapshot))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {n.name: sum(p.get(n.name, 0.0) for p in parts) / len(parts) for n in nodes}


#: snapshot -> its nodes per NVLink clique: counted once per cycle, not once per pod (a pass over
#: every node per GPU pod was three quarters of the plain scenario's cycle with DRA off)
_CLIQUE_SIZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _clique_sizes(snapshot: Snapshot) -> dict[str, int]:
    sizes = _CLIQUE_SIZES.get(snapshot)
    if sizes is None:
        sizes = {}
        for n in snapshot.nodes:
            label = n.labels.get(CLIQUE_LABEL)
            if label:
                sizes[label] = sizes.get(label, 0) + 1
        _CLIQUE_SIZES[snapshot] = sizes
    return sizes


def _carved_scores(nodes: list[NodeInfo], snapshot: Snapshot) -> dict[str, float]:
    """100 x the share of a node's GPUs (counter sets, or MIG parents) already partly in use."""
    in_use = snapshot.devices_in_use
    out = {}
    for n in nodes:
        gpus: dict[object, bool] = {}
        for d in snapshot.dra.devices_for_node(n.obj):
            if d.id.driver != GPU_DRIVER:
                continue
            if d.consumes:
                parent: object = (d.id.pool, d.consumes[0][0])
            elif _attribute(d, "type") == "mig":
                parent = _attribute(d, "parentUUID")
            else:
                parent = _attribute(d, "uuid")
            gpus[parent] = gpus.get(parent, False) or (d.id in in_use and _attribute(d, "type") == "mig")
        out[n.name] = 100.0 * sum(gpus.values()) / len(gpus) if gpus else 0.0
    return out
