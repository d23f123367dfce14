"""Every extension point of the kai scheduler, in one place.

Plugins implement these with ``@kai_core.framework.hookspecs.hookimpl`` and are found through the entry-point group
``kai_scheduler.plugins`` (built-in plugins are registered directly). A plugin may implement any
subset of hooks, and a hook implementation may accept any subset of the arguments listed.

Cost rule: a scheduling hook is called **once per pod with the whole node list** (the gang hooks:
once per cycle and once per gang; a gang member goes through the filters, the allocation and the
scores once per node subset tried, with that subset), never per node or per device; a hook call
costs microseconds, a per-node call would cost seconds per cycle.

Error rule: an exception raised by a plugin never takes the scheduler down. The pod being
scheduled gets an unschedulable reason naming the plugin and the hook, and the traceback is logged
once; a result of the wrong shape is treated the same way. Hook wrappers are refused at
registration (every implementation is called on its own, to isolate failures), and so are a
``kai_*`` function whose name is not a hook, one marked by another project's ``HookimplMarker``,
and a hook-named function not marked at all: each would silently never run
(:class:`kai_core.framework.plugins.PluginRefused` names the plugin and the closest hook).

Objects are Kubernetes JSON dicts (``pod``, nodes' ``.obj``, claims, BindRequests) and must not be
mutated; ``snapshot`` is the cycle's :class:`kai_core.framework.snapshot.Snapshot`.
"""

from __future__ import annotations

import pluggy

PROJECT = "kai"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class SchedulerSpecs:
    """Hooks of the scheduler, in the order a cycle calls them."""

    @hookspec
    def kai_resource_kinds(self):
        """Called once at start. Return a list of CustomResourceDefinition objects (dicts) for the
        kinds this plugin needs served and watched (e.g. NVIDIA's ComputeDomain). The embedded
        cluster serves them and validates objects against their schemas; against a real cluster
        they must already be installed. The scheduler watches those the cluster serves, and hooks
        read them with ``snapshot.objects("<plural>.<group>")``. Results of all plugins are
        concatenated."""

    @hookspec
    def kai_embedded_controllers(self, store):
        """Called once at start, in embedded mode only. Return a list of controllers emulating what
        a real control plane would run for this plugin's kinds. A controller has a ``name`` and a
        ``reconcile(store) -> None`` method, called every round before the scheduler; it must be
        idempotent and write only when something must change."""

    @hookspec
    def kai_pod_groups(self, pods, snapshot):
        """Called once per cycle, before any pod is placed, with ``pods``: every pod of this
        scheduler that is not finished nor being deleted (waiting, in flight or bound), in no
        particular order. Return a list of :class:`kai_core.framework.gang.GroupSpec`, each saying "these pods
        form a group of which at least ``min_member`` must run" (``min_member`` None: all the pods
        listed), or None. List placed members too: they count toward the minimum.

        Results of all plugins are collected; declarations that share a pod are merged into one
        gang, placed only if every declaration in it is satisfied (see :mod:`kai_core.framework.gang`). The
        built-in ``kai-core.gang`` plugin declares KAI's PodGroups this way. A plugin that fails here
        declares nothing this cycle (the error is logged): its pods are scheduled one by one."""

    @hookspec
    def kai_group_node_subsets(self, group, nodes, snapshot):
        """Called once per gang per cycle (KAI's ``SubsetNodesFn``), before its members are tried,
        with the :class:`kai_core.framework.gang.Gang` (``group.pods`` waiting, ``group.placed`` running,
        ``group.need`` how many must be placed now) and every :class:`kai_core.framework.snapshot.NodeInfo`.
        Return None to leave placement free, a list of :class:`kai_core.framework.gang.NodeSubset` to try in
        that order (the whole gang goes inside the first subset where it fits), or a reason (str)
        when no subset can hold the gang, which then waits with that reason.

        Several plugins' subsets are intersected (every non-empty intersection, in the first
        plugin's order, then the next one's). At most :data:`kai_core.framework.gang.MAX_SUBSETS_TRIED` subsets
        are tried per cycle, so order them best first; cheap estimates are fine, since each subset
        is checked for real by the filters and the allocator."""

    @hookspec
    def kai_pre_filter(self, pod, snapshot):
        """Called once per pending pod, before any node is looked at. Return None to go on, or a
        reason (str) that makes the pod unschedulable this cycle whatever the nodes; the reason
        becomes the pod's condition message as it is (a built-in doing a kube-scheduler plugin's
        work: ``0/N nodes are available: <reason>.``, as kube-scheduler words a PreFilter's
        rejection). All plugins are called, in pluggy's order
        (built-ins first); the first reason wins. Checking a driver's opaque configs is
        ``kai_check_configs``'s job (kai finds them and words the reason)."""

    @hookspec
    def kai_filter_nodes(self, pod, nodes, snapshot):
        """Called once per pod with the list of candidate :class:`kai_core.framework.snapshot.NodeInfo`:
        the nodes that passed the filters called before this one (built-ins run first, in
        kube-scheduler's order; a plugin is not called once no node is left). Return a dict
        ``{node_name: reason}`` of the nodes this plugin rejects, where a reason is a str or a
        list of str (an empty dict or None rejects none). Reasons are counted into the pod's
        ``0/N nodes are available: ...`` message, so keep them node-independent. Reading
        ``node.requested`` (which includes in-flight and assumed pods) is how a filter sees
        earlier decisions of the same cycle; ``snapshot.requests_of(pod)`` gives the pod's
        requests.

        The answer for a node must depend only on the pod and on that node (its object, the pods
        and devices on it): within a cycle the scheduler reuses it for the next pods of the same
        shape until something is placed on that node, so after the first pod of a Job a filter is
        asked about one or two nodes, not all (:mod:`kai_core.scheduler.equivalence`). A plugin whose answer
        for a node depends on other nodes (spreading over zones, say) sets ``KAI_NODE_LOCAL =
        False`` on its plugin object, and is then asked about every node for every pod. For the
        same reason a reason must not name the pod itself (naming the pod's own ResourceClaims is
        fine: the scheduler puts the next pod's claim names in their place), nor depend on the
        pod's PodGroup (its ``pod-group-name`` annotation: pods of like gangs share answers)."""

    @hookspec
    def kai_check_configs(self, pod, configs, snapshot):
        """Called once per pod with resource claims, after every ``kai_pre_filter`` let it through,
        with ``configs``: the :class:`kai_core.dra.pod_devices.OpaqueConfig` entries addressed to
        this plugin's drivers, which it names in ``KAI_DRIVERS`` (a tuple of driver names on the
        plugin object; implementing this hook without it refuses the plugin at load). kai walks
        the pod's claims, their requests and the DeviceClasses those name: a claim's own
        ``spec.devices.config`` and its classes' ``spec.config`` both reach the driver. A plugin
        with no config of its drivers in the pod is not called.

        Return ``{config: problem}`` for the configs the driver would refuse (a problem is a str,
        or a list of str joined with "; "; name the field: ``parameters.clockMHz 900 is out of
        range (100..600)``), or None. The pod is then unschedulable whatever the nodes, with the
        first problem in the order above worded by kai: ``pod claim "fpga" (ResourceClaim
        "default/x"): spec.devices.config[0] (fpga.example.com FpgaConfig): <problem>``."""

    @hookspec
    def kai_filter_devices(self, pod, requests, snapshot):
        """Called at most once per pod whose claims need new devices, before the allocator looks
        at the nodes, with ``requests``: a :class:`kai_core.dra.allocator.RequestDevices` per
        request (``firstAvailable`` sub-requests each on their own) of the pod's unallocated
        claims, each with ``devices``: the :class:`kai_core.dra.inventory.Device` its selectors
        match on the candidate nodes (devices in use and tainted ones included).

        Return ``{DeviceId: reason}`` for the devices the pod must not get (``device.id`` keys;
        for every request of the pod), or None. They are never allocated to it, and a request
        left short says so in the pod's message: ``... 0 free (2 match, 0 in use, 2 removed by
        plugin 'rdma': NIC link down)``, so keep a reason device- and node-independent. Several
        plugins' removals add up (the first reason given for a device is kept). The answer for a
        device must depend only on the pod and that device (answers are reused per pod shape as
        ``kai_filter_nodes``'s are). When no plugin implements this hook, nothing is listed."""

    @hookspec(firstresult=True)
    def kai_allocate_claims(self, pod, claims, nodes, snapshot, rank_devices, filter_devices):
        """Called once per pod that has resource claims, over the nodes that passed every filter.
        ``claims`` is the list of :class:`kai_core.dra.claims.PodClaim` of the pod (already allocated
        ones included, marked). Return ``{node_name: ClaimAllocation | str}``: for a node where the
        claims fit, a :class:`kai_core.dra.claims.ClaimAllocation` (one AllocationResult per claim,
        in ``claims`` order); otherwise a reason string (the pod's message counts it as
        kube-scheduler's ``cannot allocate all claims``; ``kai-cli explain`` shows it whole; see
        ``kai_core.framework.plugins.DRA_NODE_REASONS``). Return None to leave the pod to the next
        plugin. The first non-None answer wins; the built-in structured allocator runs last.
        Answers are reused per pod shape like ``kai_filter_nodes``'s, under the same rule.

        ``rank_devices`` is None when no plugin implements ``kai_rank_devices``; otherwise an
        allocator calls it at most once per pod, as ``rank_devices(claim_objects, list_devices)``
        (``list_devices()`` returns the candidate devices), and gets ``{DeviceId: score}``, None, or
        a :class:`kai_core.framework.status.Status` error to give every node as the reason (the
        pod is then told that error, whatever the allocator answers).
        ``filter_devices`` is the same for ``kai_filter_devices``: None, or
        ``filter_devices(claim_objects, list_requests)`` (``list_requests()`` returns the
        :class:`kai_core.dra.allocator.RequestDevices`) giving ``{DeviceId: reason}`` (reasons
        naming the plugin), None or an error Status; call it before ``rank_devices`` and leave
        the removed devices out of the list handed to it."""

    @hookspec
    def kai_score_nodes(self, pod, nodes, snapshot):
        """Called once per pod with the feasible nodes (not called when only one is feasible).
        Return ``{node_name: score}`` with numeric scores in 0..100 (missing nodes score 0); a
        score outside 0..100 (or NaN) is a bad result: the pod gets an error naming the plugin.
        Scores of all plugins are multiplied by the plugin's weight (config ``score_weights``,
        ``kai-cli run scheduler --score-weight PLUGIN=N``, chart value ``scheduler.scoreWeights``;
        default 1, kube-scheduler's default-profile weight for kai-core's plugins doing one of its
        plugins' work) and summed; the highest total wins, ties go to the node name that sorts
        first. A plugin whose score for a node depends only on the pod and that node sets
        ``KAI_NODE_LOCAL = True`` on its plugin object: it is then asked only about nodes changed
        since the last pod of the same shape (the built-in binpack does); others see every
        feasible node each time."""

    @hookspec
    def kai_bind_request(self, pod, node, bind_request):
        """Called when a decision is committed, before the BindRequest is written. Return a dict of
        annotations (str values) to add to it (the channel from scheduler plugins to binder
        plugins; keys like ``<plugin>.kai.scheduler/<key>``), or None. ``node`` is the chosen
        :class:`kai_core.framework.snapshot.NodeInfo`. A failure here leaves the pod for the next cycle."""

    @hookspec
    def kai_cli_commands(self, cli):
        """Called when ``kai-cli`` starts. Add click commands to the ``cli`` group."""

    @hookspec
    def kai_rank_devices(self, pod, claims, devices, snapshot):
        """Called at most once per pod whose claims need new devices, before the structured
        allocator looks at the nodes, with ``devices``: every :class:`kai_core.dra.inventory.Device`
        that some request of ``claims`` (the pod's unallocated ResourceClaim objects) could use on
        the candidate nodes, chosen by selectors only (devices in use and tainted ones included).
        Return ``{DeviceId: score}`` (``device.id`` keys, numbers, higher preferred; missing
        devices score 0) to steer which devices the allocator picks among those that fit, or None
        to keep its default (pack: partly used counter sets and pools first, whole GPUs last).
        Every plugin is asked, and the answers are summed by device, so a MIG plugin's and a NIC
        plugin's rankings both count. Devices removed by ``kai_filter_devices`` are not listed.
        Scores never make a device fit that does not. ``devices`` is a read-only sequence listed
        the first time it is read: a plugin that can answer from ``claims`` alone (None for claims
        it has no say in) should not touch it, and so costs nothing."""

    @hookspec(firstresult=True)
    def kai_device_gpu_worth(self, driver, device, pool_devices):
        """How many GPUs one DRA device allocated to a pod counts as in its queue's usage (quotas,
        limits, fair share): a number >= 0 (0.25 for a quarter of a GPU), or None to leave it to the
        next plugin and finally to kai's rule (a device of a driver whose name contains "gpu" is one
        GPU, a MIG device the fraction of its parent GPU's memory). ``driver`` is the allocation
        result's driver, ``device`` the device's entry in its ResourceSlice (None when no slice
        publishes it) and ``pool_devices`` every published device of that driver's pool (a part of
        a GPU finds its parent there). Called once per allocated device when usage is counted."""
