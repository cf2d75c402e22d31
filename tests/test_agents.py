"""Search agents and the evaluator, on a tiny CNN and synthetic data (fast, deterministic)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hwprune import train
from hwprune.agents import SearchAgent, SearchContext, available_agents, get_agent, register_agent
from hwprune.agents.state import finished_result
from hwprune.agents.uniform import UniformAgent
from hwprune.data import load_data
from hwprune.errors import BudgetError, ConfigError
from hwprune.evaluator import Evaluator
from hwprune.models import create_model
from hwprune.pruning import ModelGraph, PruningPlan


def _block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def tiny_net() -> nn.Module:
    """Four prunable groups, named '0', '3', '6', '9' after their convs."""
    return nn.Sequential(
        *_block(1, 8, 2),
        *_block(8, 16, 2),
        *_block(16, 16),
        *_block(16, 32, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


class MacsPredictor:
    """Latency proportional to MACs; ``weights`` plants layers slower than their FLOPs suggest."""

    def __init__(self, graph: ModelGraph, weights: dict[str, float] | None = None) -> None:
        self.graph, self.weights = graph, weights or {}

    def predict_ms(self, plan: PruningPlan) -> float:
        shapes = self.graph.layer_shapes(plan.keep)
        return 0.01 + 1e-5 * sum(s.macs * self.weights.get(s.name, 1.0) for s in shapes)


class ProxyEvaluator:
    """Cheap deterministic stand-in for accuracy: wider groups score higher (diminishing returns)."""

    def __init__(self, graph: ModelGraph) -> None:
        self.graph, self.calls = graph, 0

    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        self.calls += 1  # channel counts alone: the lineage makes no difference here
        acc = sum((plan.keep[g.name] / g.channels) ** 0.5 for g in self.graph.groups) / len(self.graph.groups)
        return acc, 1.0 - acc


class Interrupting:
    """Wraps a predictor or evaluator and raises KeyboardInterrupt on call number ``after + 1``."""

    def __init__(self, inner, after: int) -> None:
        self.inner, self.after, self.calls = inner, after, 0

    def _tick(self) -> None:
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt

    def predict_ms(self, plan: PruningPlan) -> float:
        self._tick()
        return self.inner.predict_ms(plan)

    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        self._tick()
        return self.inner.score(plan, lineage)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead and noise on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """A tiny CNN briefly trained on synthetic data, so pruning it changes accuracy."""
    data = load_data("synthetic", val_size=100)
    torch.manual_seed(0)
    model = tiny_net()
    train.fine_tune(model, data.train, 40, lr=0.05, batch_size=64, seed=0)
    return model, ModelGraph(model, (1, 32, 32)), data


@pytest.fixture(scope="module")
def resnet_graph():
    model = create_model("resnet20", 1, 10)
    return model, ModelGraph(model, (1, 16, 16))


def make_ctx(model, graph, predictor, evaluator, **kw) -> SearchContext:
    return SearchContext("tiny", model, graph, predictor, evaluator, seed=0, **kw)


def real_evaluator(tiny) -> Evaluator:
    model, graph, data = tiny
    return Evaluator(model, graph, data, finetune_steps=2, batch_size=32, seed=0, val_samples=100)


NETADAPT_FAST = {"initial_reduction": 0.2, "decay": 1.0, "progress": False}


@pytest.fixture(scope="module")
def netadapt_reference(tiny):
    """One uninterrupted NetAdapt search with the real evaluator: determinism and resume compare to it."""
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), real_evaluator(tiny))
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    return budget, get_agent("netadapt", **NETADAPT_FAST).search(ctx, budget)


# ---- registry ------------------------------------------------------------------------------------
def test_registry_lists_agents_and_suggests_unknown_names() -> None:
    assert {"uniform", "netadapt"} <= set(available_agents())
    with pytest.raises(ConfigError, match="did you mean netadapt") as err:
        get_agent("netadpt")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="did you mean decay"):
        get_agent("netadapt", decai=0.5)
    with pytest.raises(ConfigError, match="selection must be one of"):
        get_agent("netadapt", selection="fastest")


def test_duplicate_agent_name_raises() -> None:
    class Again(UniformAgent):
        name = "uniform"

    with pytest.raises(ValueError, match="already registered"):
        register_agent(Again)
    assert isinstance(get_agent("uniform"), SearchAgent)


# ---- every agent meets the predicted budget, deterministically --------------------------------------
@pytest.mark.parametrize("agent", ["uniform", "netadapt"])
@pytest.mark.parametrize("fraction", [0.7, 0.4])
def test_agent_plan_meets_predicted_budget(tiny, agent: str, fraction: float) -> None:
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = fraction * ctx.predict_ms(ctx.full_plan())
    options = {"progress": False} if agent == "netadapt" else {}
    result = get_agent(agent, **options).search(ctx, budget)
    assert result.predicted_ms == pytest.approx(ctx.predictor.predict_ms(result.plan))
    assert result.predicted_ms <= budget
    result.plan.validate(graph)
    assert all(result.plan.keep[g.name] >= ctx.min_keep(g.name) for g in graph.groups)
    json.dumps(result.history), json.dumps(result.cost)  # JSON-ready for the run directory
    ctx2 = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    again = get_agent(agent, **options).search(ctx2, budget)
    assert again.plan.key() == result.plan.key()


def test_uniform_is_largest_ratio_and_respects_rounding(resnet_graph) -> None:
    model, graph = resnet_graph
    ctx = SearchContext("resnet20", model, graph, MacsPredictor(graph), ProxyEvaluator(graph), round_to=4)
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    result = get_agent("uniform").search(ctx, budget)
    assert result.predicted_ms <= budget
    assert all(k % 4 == 0 or k == graph.group_by_name[g].channels for g, k in result.plan.keep.items())
    ladder = [plan for _, plan in UniformAgent.ladder(ctx)]
    wider = ladder[ladder.index(result.plan) + 1 :]
    assert wider and all(ctx.predict_ms(p) > budget for p in wider)  # every wider uniform plan misses
    assert ctx.predict_ms(UniformAgent.plan_at(ctx, result.history[-1]["ratio"])) == result.predicted_ms
    assert result.cost["evaluations"] == 0 and result.cost["predictor_calls"] > 0


class OddWidthsSlow(MacsPredictor):
    """As on ONNX Runtime: a plan with an odd width anywhere runs 3x its MACs, so latency does not grow with r."""

    def predict_ms(self, plan: PruningPlan) -> float:
        return super().predict_ms(plan) * (3.0 if any(k % 2 for k in plan.keep.values()) else 1.0)


def test_uniform_finds_the_widest_fitting_plan_when_latency_is_not_monotone_in_the_ratio(resnet_graph) -> None:
    model, graph = resnet_graph
    ctx = SearchContext("resnet20", model, graph, OddWidthsSlow(graph), ProxyEvaluator(graph))
    plans = [plan for _, plan in UniformAgent.ladder(ctx)]
    budget = 0.3 * ctx.predict_ms(ctx.full_plan())
    widest = max(i for i, plan in enumerate(plans) if ctx.predict_ms(plan) <= budget)
    # the planted trap: some narrower plans miss, so a bisection could stop below the widest that fits
    assert any(ctx.predict_ms(plan) > budget for plan in plans[:widest])
    result = get_agent("uniform").search(ctx, budget)
    assert result.plan == plans[widest] and all(k % 2 == 0 for k in result.plan.keep.values())


def test_netadapt_real_evaluator_is_deterministic(tiny, netadapt_reference) -> None:
    budget, ref = netadapt_reference
    assert ref.predicted_ms <= budget and len(ref.history) >= 2
    assert ref.cost["evaluations"] > 0 and ref.cost["finetune_steps"] == 2 * ref.cost["evaluations"]
    model, graph, _ = tiny
    again = get_agent("netadapt", **NETADAPT_FAST).search(
        make_ctx(model, graph, MacsPredictor(graph), real_evaluator(tiny)), budget
    )
    assert again.plan.key() == ref.plan.key()
    assert [r["accuracy"] for r in again.history] == [r["accuracy"] for r in ref.history]


def test_a_lineage_scores_the_candidate_cut_from_the_model_the_search_reached(tiny) -> None:
    """Carried weights: the candidate is cut from the fine-tuned winner of the step before, not from the
    original weights, and a fresh evaluator (a resumed search) replays that step to the same score."""
    model, graph, _ = tiny
    full = PruningPlan.full("tiny", graph)
    first = full.with_keep({graph.groups[0].name: graph.groups[0].channels // 2})
    second = first.with_keep({graph.groups[1].name: graph.groups[1].channels // 2})
    evaluator = real_evaluator(tiny)
    carried = evaluator.score(second, (first,))
    assert carried != evaluator.score(second)  # other weights: 2 more fine-tune steps, filters picked after them
    assert evaluator.evaluations == 2 and evaluator.finetune_steps_done == 6  # `first` was replayed, not scored
    fresh = real_evaluator(tiny)
    assert fresh.score(second, (first,)) == carried and fresh.score(second, (first,)) == carried
    assert fresh.evaluations == 1 and fresh.cache_hits == 1


def test_adaptive_bn_scores_are_seeded_and_read_a_deep_cut_better(tiny) -> None:
    """With ``bn_batches`` a candidate's BN statistics are re-estimated before its score: the score stays a pure
    function of the plan (cacheable), and a deep cut from the original weights scores on its own statistics
    rather than the unpruned model's."""
    model, graph, data = tiny
    deep = PruningPlan.full("tiny", graph).with_keep({g.name: max(1, g.channels // 4) for g in graph.groups})

    def scored(bn_batches: int) -> tuple[float, float]:
        return Evaluator(model, graph, data, seed=0, val_samples=100, bn_batches=bn_batches).score(deep)

    assert scored(4) == scored(4)
    assert scored(4)[1] < scored(0)[1]  # a lower validation loss once the statistics fit the cut
    with pytest.raises(ConfigError, match="BN"):
        Evaluator(model, graph, data, bn_batches=-1)


def test_carried_hands_over_the_scored_model_with_indices_of_the_original(tiny) -> None:
    """The model a lineage produced, for the job's long fine-tune: the very model its last step scored,
    and a plan whose kept indices are the original filters (a group cut twice composes both choices)."""
    model, graph, _ = tiny
    g0, g1 = graph.groups[0].name, graph.groups[1].name
    first = PruningPlan.full("tiny", graph).with_keep({g0: 4})
    lineage = (first, first.with_keep({g1: 8}), first.with_keep({g1: 8, g0: 2}))
    untrained = Evaluator(model, graph, tiny[2], finetune_steps=0, seed=0, val_samples=100)
    carried, plan = untrained.carried(lineage)
    kept0, kept1 = plan.groups[g0].kept_indices, plan.groups[g1].kept_indices
    assert plan.keep == lineage[-1].keep and len(kept0) == 2 and len(kept1) == 8
    assert torch.equal(carried[0].weight, model[0].weight[list(kept0)])
    assert torch.equal(carried[3].weight, model[3].weight[list(kept1)][:, list(kept0)])
    evaluator = real_evaluator(tiny)
    trained, _ = evaluator.carried(lineage)
    assert train.score(trained, tiny[2].val, max_samples=100) == evaluator.score(lineage[-1], lineage[:-1])
    trained[0].weight.data.zero_()  # a copy: the job's long fine-tune must not touch the held model
    assert evaluator.carried(lineage)[0][0].weight.abs().sum() > 0


@pytest.mark.parametrize("weights", ["carried", "original"])
def test_netadapt_weights_options_both_search(tiny, weights: str, tmp_path) -> None:
    """Carried weights return the lineage the job fine-tunes from (kept in the finished state file too)."""
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), real_evaluator(tiny))
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    result = get_agent("netadapt", **NETADAPT_FAST, weights=weights).search(ctx, budget, tmp_path / "s.json")
    assert result.predicted_ms <= budget and result.cost["evaluations"] > len(result.history)
    lineage = [p.key() for p in result.lineage]
    if weights == "carried":
        assert len(lineage) == len(result.history) and lineage[-1] == result.plan.key()
    else:
        assert lineage == []
    assert [p.key() for p in finished_result(tmp_path / "s.json").lineage] == lineage


def test_netadapt_prunes_the_planted_slow_layer_first(tiny) -> None:
    model, graph, _ = tiny
    # Layer '0' has the fewest MACs, but the table says it is 20x slower than its FLOPs suggest.
    planted = make_ctx(model, graph, MacsPredictor(graph, {"0": 20.0}), ProxyEvaluator(graph))
    flops = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    agent = get_agent("netadapt", progress=False)
    first = agent.search(planted, 0.6 * planted.predict_ms(planted.full_plan())).history[0]
    assert first["group"] == "0"
    assert len(first["candidates"]) > 1  # a real choice among groups, not the only option left
    assert agent.search(flops, 0.6 * flops.predict_ms(flops.full_plan())).history[0]["group"] != "0"


def test_netadapt_respects_round_to(tiny) -> None:
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph), round_to=4)
    result = get_agent("netadapt", progress=False).search(ctx, 0.5 * ctx.predict_ms(ctx.full_plan()))
    assert result.predicted_ms <= 0.5 * ctx.predict_ms(ctx.full_plan())
    assert all(k % 4 == 0 and k >= 4 for k in result.plan.keep.values())


@pytest.mark.parametrize("selection", ["loss", "accuracy", "accuracy_per_ms"])
def test_netadapt_selection_rules_pick_their_best_candidate(tiny, selection: str) -> None:
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    result = get_agent("netadapt", selection=selection, progress=False).search(ctx, budget)
    assert result.predicted_ms <= budget
    for row in result.history:
        cands = row["candidates"]
        if selection == "loss":
            assert row["loss"] == min(c["loss"] for c in cands)
        elif selection == "accuracy":
            assert row["accuracy"] == max(c["accuracy"] for c in cands)


# ---- checkpoint and resume ----------------------------------------------------------------------------
@pytest.mark.parametrize("interrupt", ["evaluator", "predictor"])
def test_netadapt_resume_after_interrupt_matches_uninterrupted(tiny, netadapt_reference, tmp_path, interrupt) -> None:
    budget, ref = netadapt_reference
    model, graph, _ = tiny
    state = tmp_path / "state.json"
    predictor, evaluator = MacsPredictor(graph), real_evaluator(tiny)
    if interrupt == "evaluator":
        evaluator = Interrupting(evaluator, after=len(ref.history[0]["candidates"]) + 1)
    else:
        predictor = Interrupting(predictor, after=ref.cost["predictor_calls"] // 2)  # mid-search
    with pytest.raises(KeyboardInterrupt):
        get_agent("netadapt", **NETADAPT_FAST).search(make_ctx(model, graph, predictor, evaluator), budget, state)
    saved = json.loads(state.read_text())
    assert not saved["done"] and 1 <= saved["iteration"] < len(ref.history)
    ctx = make_ctx(model, graph, MacsPredictor(graph), real_evaluator(tiny))
    resumed = get_agent("netadapt", **NETADAPT_FAST).search(ctx, budget, state)
    assert resumed.plan.key() == ref.plan.key()
    assert [(r["group"], r["keep"], r["accuracy"]) for r in resumed.history] == [
        (r["group"], r["keep"], r["accuracy"]) for r in ref.history
    ]
    assert resumed.cost["resumes"] == 1
    # A finished state answers at once, without re-evaluating anything.
    fresh = ProxyEvaluator(graph)
    ctx3 = make_ctx(model, graph, MacsPredictor(graph), fresh)
    done = get_agent("netadapt", **NETADAPT_FAST).search(ctx3, budget, state)
    assert done.plan.key() == ref.plan.key() and fresh.calls == 0


def test_netadapt_max_iterations_stops_resumably(tiny, tmp_path) -> None:
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = 0.4 * ctx.predict_ms(ctx.full_plan())
    ref = get_agent("netadapt", progress=False).search(ctx, budget)
    state = tmp_path / "state.json"
    with pytest.raises(BudgetError, match="stopped after 2 iterations") as err:
        get_agent("netadapt", max_iterations=2, progress=False).search(ctx, budget, state)
    assert "\n" not in str(err.value)
    resumed = get_agent("netadapt", progress=False).search(ctx, budget, state)  # a larger bound resumes
    assert resumed.plan.key() == ref.plan.key() and resumed.history == ref.history


def test_uniform_resume_after_interrupt(resnet_graph, tmp_path) -> None:
    model, graph = resnet_graph
    ctx = SearchContext("resnet20", model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = 0.45 * ctx.predict_ms(ctx.full_plan())
    ref = get_agent("uniform").search(ctx, budget)
    state = tmp_path / "uniform.json"
    broken = SearchContext("resnet20", model, graph, Interrupting(MacsPredictor(graph), 6), ProxyEvaluator(graph))
    with pytest.raises(KeyboardInterrupt):
        get_agent("uniform").search(broken, budget, state)
    ctx2 = SearchContext("resnet20", model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    assert get_agent("uniform").search(ctx2, budget, state).plan.key() == ref.plan.key()


def test_state_from_another_search_is_refused(tiny, tmp_path) -> None:
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    state = tmp_path / "state.json"
    get_agent("uniform").search(ctx, budget, state)
    with pytest.raises(ConfigError, match="agent: 'uniform' there, 'netadapt' here") as err:
        get_agent("netadapt", progress=False).search(ctx, budget, state)
    assert "\n" not in str(err.value) and "another search" in str(err.value)
    with pytest.raises(ConfigError, match="budget_ms"):
        get_agent("uniform").search(ctx, budget * 0.9, state)
    slow = make_ctx(model, graph, MacsPredictor(graph, {"0": 3.0}), ProxyEvaluator(graph))
    with pytest.raises(ConfigError, match="full_predicted_ms"):  # another latency table
        get_agent("uniform").search(slow, budget, state)


# ---- budgets the agents refuse ------------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["uniform", "netadapt"])
def test_agents_refuse_impossible_budget(tiny, agent: str) -> None:
    model, graph, _ = tiny
    ctx = make_ctx(model, graph, MacsPredictor(graph), ProxyEvaluator(graph), min_keep_ratio=0.5)
    floor = ctx.predict_ms(ctx.min_plan())
    with pytest.raises(BudgetError, match="impossible") as err:
        get_agent(agent).search(ctx, floor * 0.9)
    assert "\n" not in str(err.value) and f"{floor:.3f}" in str(err.value)


# ---- evaluator --------------------------------------------------------------------------------------
def test_evaluator_is_cached_seeded_and_counts(tiny) -> None:
    model, graph, data = tiny
    plan = PruningPlan.uniform("tiny", graph, 0.5)
    first = real_evaluator(tiny)
    acc, loss = first.score(plan)
    assert 0.0 <= acc <= 1.0 and loss > 0
    assert first.score(plan) == (acc, loss)
    assert first.cost()["evaluations"] == 1 and first.cost()["cache_hits"] == 1
    assert first.cost()["finetune_steps"] == 2
    assert real_evaluator(tiny).score(plan) == (acc, loss)  # same plan, same seed -> same numbers
    before = [p.detach().clone() for p in model.parameters()]
    Evaluator(model, graph, data, finetune_steps=3).score(PruningPlan.uniform("tiny", graph, 0.25))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # original untouched


def test_evaluator_uses_validation_split_only(tiny) -> None:
    model, graph, data = tiny
    from dataclasses import replace

    no_test = replace(data, test=torch.utils.data.TensorDataset(torch.empty(0), torch.empty(0)))
    ev = Evaluator(model, graph, no_test, val_samples=50)
    assert ev.score(PruningPlan.full("tiny", graph)) == train.score(model, data.val, max_samples=50)
    with pytest.raises(ConfigError):
        Evaluator(model, graph, data, finetune_steps=-1)


def test_netadapt_candidate_share_keeps_a_real_choice_among_groups(resnet_graph) -> None:
    model, graph = resnet_graph

    def first(share: float) -> dict:
        ctx = SearchContext("resnet20", model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
        agent = get_agent("netadapt", initial_reduction=0.2, candidate_share=share, progress=False)
        return agent.iterate(
            ctx, ctx.full_plan(), ctx.predict_ms(ctx.full_plan()), 0.2 * ctx.predict_ms(ctx.full_plan()), 0, _NoBar()
        )

    coarse, shared = first(0.0), first(0.5)
    assert len(shared["candidates"]) >= len(graph.groups) / 2 > len(coarse["candidates"])
    assert shared["asked_ms"] < coarse["asked_ms"]
    ctx = SearchContext("resnet20", model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    assert get_agent("netadapt", progress=False).search(ctx, budget).predicted_ms <= budget


def test_netadapt_share_cap_never_asks_below_the_schedule_floor(resnet_graph) -> None:
    """Half the groups planted nearly free: the share cap would ask for what they can give (0.1 % of the
    model an iteration, 79 iterations to 0.5x); it stops at ``min_reduction`` (1 %) instead."""
    model, graph = resnet_graph
    cheap = {
        s.name: 1e-3
        for s in graph.layer_shapes(PruningPlan.full("resnet20", graph).keep)
        if s.name.startswith(("conv1", "layer1", "layer2"))
    }
    ctx = SearchContext("resnet20", model, graph, MacsPredictor(graph, cheap), ProxyEvaluator(graph))
    full_ms = ctx.predict_ms(ctx.full_plan())
    result = get_agent("netadapt", progress=False).search(ctx, 0.5 * full_ms)
    assert result.predicted_ms <= 0.5 * full_ms
    for row in result.history:
        assert row["asked_ms"] >= min(0.01 * full_ms, row["requested_ms"]) * (1 - 1e-9), row
    assert len(result.history) < 50


class _NoBar:
    def set_postfix_str(self, *_: object) -> None:
        return None


class AlignedPredictor(MacsPredictor):
    """MACs plus a penalty per group whose width is not a multiple of 4: a SIMD backend's steps, exaggerated."""

    def predict_ms(self, plan: PruningPlan) -> float:
        macs_ms = super().predict_ms(plan)
        full_ms = MacsPredictor.predict_ms(self, PruningPlan.full("tiny", self.graph))
        return macs_ms + sum(full_ms for k in plan.keep.values() if k % 4)


def test_netadapt_finds_aligned_cuts_when_latency_is_not_monotone_in_width(tiny) -> None:
    model, graph, _ = tiny
    predictor = AlignedPredictor(graph)
    ctx = make_ctx(model, graph, predictor, ProxyEvaluator(graph))
    full_ms = predictor.predict_ms(ctx.full_plan())
    # Cutting any group to an odd width (its minimum included) costs more than it saves; cutting it
    # to another multiple of 4 saves. A search that only priced the minimum keep would stop at once.
    assert any(ctx.min_keep(g.name) % 4 for g in graph.groups)
    assert all(
        predictor.predict_ms(ctx.full_plan().with_keep({g.name: ctx.min_keep(g.name)})) > full_ms
        for g in graph.groups
        if ctx.min_keep(g.name) % 4
    )
    result = get_agent("netadapt", **NETADAPT_FAST).search(ctx, 0.6 * full_ms)
    assert result.predicted_ms <= 0.6 * full_ms
    assert all(k % 4 == 0 for k in result.plan.keep.values())


@pytest.mark.parametrize("price", [1.25, 0.8])
def test_netadapt_continues_an_earlier_search_on_a_corrected_table(resnet_graph, price: float) -> None:
    """The job searches again when timing a plan's widths moves its prediction: NetAdapt keeps the earlier
    path up to where the corrected table would have stopped it, and goes on from there, re-scoring none of it.

    Every layer costs ``price`` times what the first table said: 1.25, the path never reached the budget
    (continue from its end); 0.8, it passed the budget early (cut there: a wider plan fits).
    """
    model, graph = resnet_graph
    agent = get_agent("netadapt", progress=False)
    old = SearchContext("resnet20", model, graph, MacsPredictor(graph), ProxyEvaluator(graph))
    budget = 0.5 * old.predict_ms(old.full_plan())
    first = agent.search(old, budget)
    corrected = MacsPredictor(graph, {s.name: price for s in graph.layer_shapes()})

    def on_corrected() -> SearchContext:
        return SearchContext("resnet20", model, graph, corrected, ProxyEvaluator(graph))

    continued_ctx, fresh_ctx = on_corrected(), on_corrected()
    continued = agent.search(continued_ctx, budget, start=first)
    agent.search(fresh_ctx, budget)  # the same search from the full model: what continuing saves

    path = agent.path(continued_ctx, first.history)
    kept = next((i - 1 for i, p in enumerate(path) if corrected.predict_ms(p) <= budget), len(first.history))
    assert (kept == len(first.history)) == (price > 1)
    assert 0 < kept < len(continued.history)
    assert continued.history[:kept] == first.history[:kept]
    assert continued.predicted_ms <= budget
    assert continued_ctx.evaluator.calls < fresh_ctx.evaluator.calls
    if price < 1:  # the first plan, now far under the budget, gives way to a wider one
        assert corrected.predict_ms(first.plan) < continued.predicted_ms
