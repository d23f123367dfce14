"""Waiting for device binding conditions before the pod is bound (KEP-5007, the
``DRADeviceBindingConditions`` feature), as kube-scheduler's DynamicResources PreBind waits.

A device may need preparation outside the node before a pod can use it (a fabric-attached GPU that
a controller attaches to the chosen node). Its ResourceSlice lists ``bindingConditions`` and
``bindingFailureConditions``; the allocator copies them into the claim's allocation results, and the
driver's controller reports them as conditions of the device's entry in the claim's
``status.devices`` (matched by driver, pool, device and ``shareID``).

After the DRA step has written the pod's claims, the binder waits until, for every such result,
each binding condition is ``True``:

* a binding failure condition that is ``True`` fails the attempt at once, naming the claim, the
  device and the condition (its reason and message when set); the rollback then releases the claim,
  so that the pod is scheduled again;
* until then the attempt is left for later without holding a worker (:class:`NotReady`, as the
  volume step waits), for at most :data:`BINDING_TIMEOUT_SECONDS` (kube-scheduler's default
  ``bindingTimeout``) from when this process first saw it waiting; past that it fails.
"""

from __future__ import annotations

import time

from kai_binder.claims import ClaimBindError, describe_api_error, is_transient
from kai_binder.hookspecs import NotReady
from kai_core.api.errors import ApiError, NotFound
from kai_core.api.resources import RES_CLAIMS

#: how long a pod's devices may take to meet their binding conditions before the attempt fails
BINDING_TIMEOUT_SECONDS = 600.0


def _claim_ref(namespace: str, name: str) -> str:
    return f'ResourceClaim "{namespace}/{name}"'


def _waiting_results(allocation: dict) -> list[dict]:
    results = ((allocation or {}).get("devices") or {}).get("results") or []
    return [r for r in results if isinstance(r, dict) and r.get("bindingConditions")]


def _device_conditions(claim: dict) -> dict[tuple, dict[str, dict]]:
    """``status.devices`` of the claim: (driver, pool, device, shareID) -> condition type -> condition."""
    out: dict[tuple, dict[str, dict]] = {}
    for entry in (claim.get("status") or {}).get("devices") or []:
        if not isinstance(entry, dict):
            continue
        key = (entry.get("driver"), entry.get("pool"), entry.get("device"), entry.get("shareID"))
        out[key] = {c.get("type"): c for c in entry.get("conditions") or [] if isinstance(c, dict)}
    return out


class BindingConditionsWait:
    """Checks the binding conditions of the claims one attempt wrote; remembers since when each
    BindRequest waits (by uid), to bound the wait."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._since: dict[str, float] = {}

    def check(self, store, bind_request: dict, namespace: str, claims: list[tuple[str, dict]]) -> NotReady | None:
        """None when every device of ``claims`` (claim name, allocation written) that has binding
        conditions meets them; :class:`NotReady` while some are pending; ClaimBindError when a
        failure condition is ``True`` or the wait timed out."""
        uid = (bind_request.get("metadata") or {}).get("uid", "")
        pending: list[str] = []
        for name, allocation in claims:
            results = _waiting_results(allocation)
            if results:
                pending.extend(self._pending(store, namespace, name, results, uid))
        if not pending:
            self._since.pop(uid, None)
            return None
        now = self.clock()
        first = self._since.setdefault(uid, now)
        if now - first > BINDING_TIMEOUT_SECONDS:
            self._since.pop(uid, None)
            raise ClaimBindError(f"{pending[0]}: binding conditions not met {BINDING_TIMEOUT_SECONDS:.0f}s after "
                                 "the devices were allocated")
        return NotReady("waiting for binding conditions: " + "; ".join(pending))

    def forget(self, bind_request: dict) -> None:
        """The attempt ended (rolled back): a later one waits afresh."""
        self._since.pop((bind_request.get("metadata") or {}).get("uid", ""), None)

    def _pending(self, store, namespace: str, name: str, results: list[dict], uid: str) -> list[str]:
        where = _claim_ref(namespace, name)
        try:
            claim = store.get(RES_CLAIMS, name, namespace, fresh=True)
        except NotFound:
            self._since.pop(uid, None)
            raise ClaimBindError(f"{where} was deleted while its devices were being bound") from None
        except (ApiError, OSError) as exc:
            raise ClaimBindError(f"{where}: cannot read its device status: {describe_api_error(exc)}",
                                 transient=is_transient(exc)) from None
        statuses = _device_conditions(claim)
        pending = []
        for result in results:
            device = f"{result.get('driver')}/{result.get('pool')}/{result.get('device')}"
            key = (result.get("driver"), result.get("pool"), result.get("device"), result.get("shareID"))
            conditions = statuses.get(key, {})
            for kind in result.get("bindingFailureConditions") or []:
                condition = conditions.get(kind)
                if condition is not None and condition.get("status") == "True":
                    self._since.pop(uid, None)
                    why = ": ".join(str(x) for x in (condition.get("reason"), condition.get("message")) if x)
                    raise ClaimBindError(f"{where}: binding device {device} failed: condition {kind} is True"
                                         + (f" ({why})" if why else ""))
            missing = [kind for kind in result["bindingConditions"]
                       if (conditions.get(kind) or {}).get("status") != "True"]
            if missing:
                pending.append(f"{where} device {device} ({', '.join(missing)})")
        return pending
