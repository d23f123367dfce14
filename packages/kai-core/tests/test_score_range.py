"""Node scores must be in 0..100: a plugin giving 150, -5 or NaN would outweigh every other plugin,
so the pod gets an error naming the plugin instead (as for any bad result), and the others still
schedule."""

from __future__ import annotations

import pytest

from kai_core.framework.hookspecs import hookimpl
from kai_core.plugins import build_plugin_manager


class Scores:
    def __init__(self, score) -> None:
        self.score = score

    @hookimpl
    def kai_score_nodes(self, pod, nodes):
        if pod["metadata"]["name"] != "mine":
            return None
        return {n.name: self.score if n.name == "n2" else 0 for n in nodes}


@pytest.mark.parametrize("score", [150, -5, 100.5, float("nan")])
def test_a_score_outside_0_to_100_is_refused_naming_the_plugin(world, score):
    pm = build_plugin_manager(load_external=False)
    pm.register(Scores(score), name="greedy")
    w = world(world.node("n1"), world.node("n2"), world.pod("mine"), world.pod("other"), pm=pm)
    w.cycle()
    assert w.message("mine") == (f"plugin 'greedy' returned a bad result from kai_score_nodes: node n2: "
                                 f"score {score!r} is outside 0..100")
    assert "other" in w.placed()


@pytest.mark.parametrize("score", [0, 100, 37.5])
def test_scores_at_and_inside_the_bounds_are_taken(world, score):
    pm = build_plugin_manager(load_external=False)
    pm.register(Scores(score), name="fair")
    w = world(world.node("n1"), world.node("n2"), world.pod("mine"), pm=pm)
    w.cycle()
    assert w.placed() == {"mine": "n2" if score else "n1"}
