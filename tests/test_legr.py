"""LeGR: the learned ranking, its threshold, the evolutionary search, and reusing a ranking for other budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_agents import Interrupting, MacsPredictor, OddWidthsSlow, ProxyEvaluator, tiny_net

from hwprune import train
from hwprune.agents import SearchContext, get_agent
from hwprune.agents.ranking import Ranking, Thresholder, identity_pairs, scores_of, standardised_norms
from hwprune.checkpoint import save_checkpoint
from hwprune.cli import main
from hwprune.data import load_data
from hwprune.errors import ArtifactError, BudgetError, ConfigError
from hwprune.evaluator import Evaluator
from hwprune.job import JobConfig, run_job
from hwprune.models import ModelSpec, create_model
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan, channel_norms

FAST = {"population": 4, "tournament": 2, "generations": 6, "progress": False}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    data = load_data("synthetic", val_size=100)
    torch.manual_seed(0)
    model = tiny_net()
    train.fine_tune(model, data.train, 40, lr=0.05, batch_size=64, seed=0)
    return model, ModelGraph(model, (1, 32, 32)), data


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10)
    return model, ModelGraph(model, (1, 16, 16))


def tiny_ctx(tiny, evaluator=None, seed: int = 0, **kw) -> SearchContext:
    model, graph, data = tiny
    evaluator = evaluator or Evaluator(model, graph, data, finetune_steps=2, batch_size=32, seed=0, val_samples=100)
    return SearchContext("tiny", model, graph, MacsPredictor(graph), evaluator, seed=seed, **kw)


class FailingEvaluator:
    """Reusing a ranking must evaluate nothing: any score is a failure."""

    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        raise AssertionError("a reused ranking evaluated a plan")


def random_pairs(graph: ModelGraph, rng: np.random.Generator, spread: float = 1.5) -> dict[str, tuple[float, float]]:
    return {g.name: (math.exp(rng.normal(0, spread)), rng.normal(0, 2 * spread)) for g in graph.groups}


def channels(plan: PruningPlan) -> int:
    return sum(plan.keep.values())


@pytest.fixture(scope="module")
def reference(tiny):
    """One uninterrupted LeGR search with the real evaluator: determinism, resume and reuse compare to it."""
    ctx = tiny_ctx(tiny)
    budget = 0.6 * ctx.predict_ms(ctx.full_plan())
    return budget, get_agent("legr", **FAST).search(ctx, budget)


# ---- the ranking and its threshold ----------------------------------------------------------------
def test_norms_are_standardised_within_each_group_in_the_order_apply_plan_keeps(resnet) -> None:
    model, graph = resnet
    z, raw = standardised_norms(model, graph), channel_norms(model, graph)
    for g in graph.groups:
        assert z[g.name].mean() == pytest.approx(0, abs=1e-9) and z[g.name].std() == pytest.approx(1)
        assert list(np.argsort(-z[g.name], kind="stable")) == list(np.argsort(-raw[g.name].numpy(), kind="stable"))


@pytest.mark.parametrize("predictor", [MacsPredictor, OddWidthsSlow])
@pytest.mark.parametrize("fraction", [0.7, 0.5, 0.3])
def test_identity_pairs_are_plain_global_standardised_l2_ranking(resnet, predictor, fraction: float) -> None:
    """alpha = 1, kappa = 0: the plan is the widest under the budget of those one threshold on the pooled
    standardised norms gives (written here from the definition: keep what scores at least t, for every t)."""
    model, graph = resnet
    ctx = SearchContext("resnet20", model, graph, predictor(graph), ProxyEvaluator(graph))
    budget = fraction * ctx.predict_ms(ctx.full_plan())
    z = standardised_norms(model, graph)
    plan, ms, _ = Thresholder(ctx).fit(scores_of(z, identity_pairs(graph)), budget)
    pooled = sorted(set(np.concatenate(list(z.values())).tolist()))
    expected = None
    for t in [-math.inf, *pooled[1:], math.inf]:
        keep = {
            g.name: ctx.clamp_keep(g.name, max(int((z[g.name] >= t).sum()), ctx.min_keep(g.name))) for g in graph.groups
        }
        candidate = ctx.full_plan().with_keep(keep)
        if ctx.predict_ms(candidate) <= budget:
            expected = candidate
            break
    assert expected is not None and plan.keep == expected.keep and ms <= budget


def test_threshold_meets_the_budget_and_the_minimum_keep_for_random_pairs_and_budgets(resnet) -> None:
    """A property over random affine pairs, budgets, roundings and a non-monotone predictor: the plan is predicted
    under the budget, no group under its minimum keep or off its allowed widths, and every wider plan a
    threshold gives is over the budget (it is the widest that fits, not a bisection's guess)."""
    model, graph = resnet
    z = standardised_norms(model, graph)
    rng = np.random.default_rng(0)
    for case in range(24):
        predictor = (MacsPredictor if case % 2 else OddWidthsSlow)(graph)
        ctx = SearchContext(
            "resnet20",
            model,
            graph,
            predictor,
            ProxyEvaluator(graph),
            min_keep_ratio=0.2,
            round_to=(1, 4)[case % 3 == 0],
        )
        full, floor = ctx.predict_ms(ctx.full_plan()), ctx.predict_ms(ctx.min_plan())
        budget = rng.uniform(floor, full)
        thresholder = Thresholder(ctx)
        scores = scores_of(z, random_pairs(graph, rng))
        plan, ms, priced = thresholder.fit(scores, budget)
        assert ms == ctx.predict_ms(plan) <= budget
        for g in graph.groups:
            assert plan.keep[g.name] >= ctx.min_keep(g.name) and plan.keep[g.name] in ctx.allowed_keeps(g.name)
        plans = list(thresholder.plans(scores))
        assert plans[0] == ctx.full_plan() and plans[-1].keep == ctx.min_plan().keep
        assert all(all(b.keep[n] <= a.keep[n] for n in a.keep) for a, b in zip(plans, plans[1:], strict=False))
        wider = [p for p in plans if channels(p) > channels(plan)]
        assert len(wider) == priced - 1 and all(ctx.predict_ms(p) > budget for p in wider)


def test_kept_filters_are_the_largest_l2_ones_whatever_the_pairs(tiny) -> None:
    model, graph, _ = tiny
    ctx = tiny_ctx(tiny, ProxyEvaluator(graph))
    z, norms = standardised_norms(model, graph), channel_norms(model, graph)
    rng = np.random.default_rng(1)
    extremes = [(1e-3, 5.0), (1e3, -5.0), (0.5, 0.0), (2.0, 1.0)]  # nearly flat, steep, squeezed, shifted
    extreme = {g.name: pair for g, pair in zip(graph.groups, extremes, strict=True)}
    for pairs in [extreme, *(random_pairs(graph, rng) for _ in range(5))]:
        scores = scores_of(z, pairs)
        plan, _, _ = Thresholder(ctx).fit(scores, 0.5 * ctx.predict_ms(ctx.full_plan()))
        _, applied = apply_plan(model, plan, graph)
        for g in graph.groups:
            k = plan.keep[g.name]
            by_score = set(np.argsort(-scores[g.name], kind="stable")[:k].tolist())
            by_norm = set(torch.argsort(norms[g.name], descending=True)[:k].tolist())
            assert by_score == by_norm == set(applied.groups[g.name].kept_indices)


# ---- the search ---------------------------------------------------------------------------------
class PlantedEvaluator:
    """Loss grows with what is cut, ten times faster in one group: a search should learn to spare that group."""

    def __init__(self, graph: ModelGraph, planted: str) -> None:
        self.graph, self.planted = graph, planted

    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        cut = {g.name: 1 - plan.keep[g.name] / g.channels for g in self.graph.groups}
        loss = sum(c * (10.0 if name == self.planted else 1.0) for name, c in cut.items())
        return 1 / (1 + loss), loss


def test_the_search_learns_to_spare_the_group_the_evaluator_needs(resnet) -> None:
    model, graph = resnet
    planted = "layer1.0.conv1"
    ctx = SearchContext("resnet20", model, graph, MacsPredictor(graph), PlantedEvaluator(graph, planted))
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    result = get_agent("legr", population=8, tournament=3, generations=60, progress=False).search(ctx, budget)
    identity, final = result.history[0], result.history[-1]
    assert identity["mutated"] == [] and identity["parent"] is None  # the first member is plain L2 ranking
    assert final["fitness"] > identity["fitness"] and result.predicted_ms <= budget
    assert result.plan.keep[planted] > identity["keep"][planted]
    assert final["fitness"] == max(row["fitness"] for row in result.history[:-1])
    evolved = result.history[8:-1]
    assert len(evolved) == 60 and all(row["parent"] is not None and len(row["mutated"]) == 1 for row in evolved)
    json.dumps(result.history), json.dumps(result.cost)


def test_same_seed_gives_the_same_pairs_and_plan(tiny, reference) -> None:
    budget, ref = reference
    assert ref.predicted_ms <= budget and len(ref.history) == 4 + 6 + 1
    assert ref.cost["evaluations"] > 0 and ref.cost["finetune_steps"] == 2 * ref.cost["evaluations"]
    again = get_agent("legr", **FAST).search(tiny_ctx(tiny), budget)
    assert again.plan.key() == ref.plan.key()
    assert again.history[-1]["ranking"]["pairs"] == ref.history[-1]["ranking"]["pairs"]
    assert [r["fitness"] for r in again.history] == [r["fitness"] for r in ref.history]
    other = get_agent("legr", **FAST).search(tiny_ctx(tiny, seed=1), budget)
    assert other.history[1]["pairs"] != ref.history[1]["pairs"]


def test_resume_after_an_interrupted_search_ends_at_the_same_ranking(tiny, reference, tmp_path) -> None:
    budget, ref = reference
    state = tmp_path / "legr.json"
    broken = tiny_ctx(tiny, Interrupting(tiny_ctx(tiny).evaluator, after=6))
    with pytest.raises(KeyboardInterrupt):
        get_agent("legr", **FAST).search(broken, budget, state)
    saved = json.loads(state.read_text())
    assert not saved["done"] and saved["iteration"] == 6 and len(saved["extra"]["alive"]) == 4
    resumed = get_agent("legr", **FAST).search(tiny_ctx(tiny), budget, state)
    assert resumed.history[-1]["ranking"]["pairs"] == ref.history[-1]["ranking"]["pairs"]
    assert resumed.plan.key() == ref.plan.key() and resumed.history[:-1] == ref.history[:-1]
    assert resumed.cost["resumes"] == 1
    done = get_agent("legr", **FAST).search(tiny_ctx(tiny, FailingEvaluator()), budget, state)  # finished: no work
    assert done.plan.key() == ref.plan.key()


# ---- one search, many budgets ---------------------------------------------------------------------
def test_a_saved_ranking_serves_another_budget_without_evaluating(tiny, reference, tmp_path) -> None:
    budget, ref = reference
    path = tmp_path / "ranking.json"
    learned = Ranking.from_dict(ref.history[-1]["ranking"])
    learned.save(path)
    assert Ranking.load(path) == learned and learned.budget_ms == budget and learned.cost["evaluations"] > 0
    tighter = 0.4 * tiny_ctx(tiny).predict_ms(tiny_ctx(tiny).full_plan())
    ctx = tiny_ctx(tiny, FailingEvaluator())
    reused = get_agent("legr", **FAST, ranking=str(path)).search(ctx, tighter, tmp_path / "state.json")
    assert reused.predicted_ms <= tighter and reused.cost["evaluations"] == 0 and len(reused.history) == 1
    reused.plan.validate(ctx.graph)
    z = standardised_norms(ctx.model, ctx.graph)
    assert reused.plan == Thresholder(ctx).fit(scores_of(z, learned.pairs), tighter)[0]
    assert reused.history[0]["reused"] == str(path)
    # Within a job, a later try is handed the earlier search: it re-thresholds that search's ranking.
    continued = get_agent("legr", **FAST).search(tiny_ctx(tiny, FailingEvaluator()), tighter, start=ref)
    assert continued.plan == reused.plan and continued.history[0]["reused"] == "earlier search"


def test_a_ranking_for_another_model_or_other_groups_is_refused_in_one_line(tiny, resnet, reference, tmp_path) -> None:
    _, ref = reference
    learned = Ranking.from_dict(ref.history[-1]["ranking"])
    path = tmp_path / "ranking.json"
    learned.save(path)
    wrong_groups, negative, plan_file = tmp_path / "groups.json", tmp_path / "negative.json", tmp_path / "plan.json"
    data = learned.to_dict()
    data["groups"][0][1] += 1
    wrong_groups.write_text(json.dumps(data))
    data = learned.to_dict()
    data["pairs"]["0"]["alpha"] = -1.0
    negative.write_text(json.dumps(data))
    PruningPlan.full("tiny", tiny[1]).save(plan_file)
    model, graph = resnet
    other_model = SearchContext("resnet20", model, graph, MacsPredictor(graph), FailingEvaluator())
    for file, ctx, error, match in [
        (path, other_model, ConfigError, "learned for model 'tiny', not 'resnet20'"),
        (wrong_groups, tiny_ctx(tiny, FailingEvaluator()), ConfigError, "group '0': 9 channels there, 8 here"),
        (negative, tiny_ctx(tiny, FailingEvaluator()), ArtifactError, "alpha <= 0"),
        (plan_file, tiny_ctx(tiny, FailingEvaluator()), ArtifactError, "not a hwprune legr-ranking"),
        (tmp_path / "missing.json", tiny_ctx(tiny, FailingEvaluator()), ArtifactError, "not found"),
    ]:
        with pytest.raises(error, match=match) as err:
            get_agent("legr", ranking=str(file), progress=False).search(ctx, 0.9 * ctx.predict_ms(ctx.full_plan()))
        assert "\n" not in str(err.value)


def test_options_and_budgets_refused_in_one_line(tiny) -> None:
    for options, match in [
        ({"tournament": 5, "population": 4}, "tournament must be in"),
        ({"population": 1}, "population must be >= 2"),
        ({"noise": 0}, "noise must be > 0"),
        ({"mutate_share": 0}, "mutate_share"),
        ({"fitness": "speed"}, "fitness must be one of"),
    ]:
        with pytest.raises(ConfigError, match=match):
            get_agent("legr", **options)
    ctx = tiny_ctx(tiny, FailingEvaluator(), min_keep_ratio=0.5)
    with pytest.raises(BudgetError, match="impossible|out of LeGR's reach") as err:
        get_agent("legr", **FAST).search(ctx, 0.9 * ctx.predict_ms(ctx.min_plan()))
    assert "\n" not in str(err.value)


# ---- the job: ranking.json, --ranking ---------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    out = tmp_path_factory.mktemp("ck") / "resnet20"
    torch.manual_seed(0)
    save_checkpoint(out, spec.build(), spec, {"data": "synthetic", "seed": 0})
    return out


def job_config(checkpoint: Path, out: Path, **overrides) -> JobConfig:
    settings = {
        "checkpoint": str(checkpoint),
        "out": str(out),
        "budget": "0.5x",
        "agent": "legr",
        "agent_options": {"population": 3, "tournament": 2, "generations": 3, "progress": False},
        "backend": "fake",
        "batch": 2,
        "rounds": 1,
        "settle_s": 0.0,
        "finetune_steps": 2,
        "batch_size": 16,
        "search_finetune_steps": 0,
        "val_samples": 64,
        "calibration_plans": 4,
        "margin": 0.2,
    }
    return JobConfig(**(settings | overrides))


def test_a_legr_run_leaves_its_ranking_and_a_ranking_run_evaluates_nothing(checkpoint, tmp_path, monkeypatch) -> None:
    from conftest import FakeProfiler

    from hwprune.job import measure

    monkeypatch.setattr(measure, "get_profiler", lambda name, **kw: FakeProfiler(**kw))
    learn = tmp_path / "learn"
    _, met = run_job(job_config(checkpoint, learn))
    report = json.loads((learn / "report.json").read_text())
    assert met and report["artifacts"]["ranking"] == str(learn / "ranking.json")
    ranking = Ranking.load(learn / "ranking.json")
    assert ranking.model == "resnet20" and ranking.budget == "0.5x" and ranking.cost["evaluations"] > 0
    assert ranking.table["backend"] == "fake" and ranking.table["setting"]["batch"] == 2
    first_try = report["search"]["tries"][0]
    assert ranking.budget_ms == first_try["target_ms"] and len(first_try["history"]) == 3 + 3 + 1
    assert all("reused" in t["history"][-1] for t in report["search"]["tries"][1:])  # later tries only threshold

    def no_evaluation(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a --ranking run evaluated a plan")

    monkeypatch.setattr(Evaluator, "score", no_evaluation)
    reuse = tmp_path / "reuse"
    cfg = job_config(checkpoint, reuse, budget="0.4x", ranking=str(learn / "ranking.json"), lut=str(learn / "lut.json"))
    assert cfg.agent_options["ranking"] == cfg.ranking  # the job field is the agent's option
    _, met = run_job(cfg)
    report = json.loads((reuse / "report.json").read_text())
    assert met and report["search"]["cost"]["evaluations"] == 0
    taken = report["search"]["tries"][report["search"]["taken_try"] - 1]
    assert taken["predicted_ms"] <= taken["target_ms"] and taken["history"][-1]["reused"] == str(learn / "ranking.json")
    assert Ranking.load(reuse / "ranking.json") == ranking  # copied as handed in: learned at 0.5x, in that run


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--budget", "0.5x", "--agent", "netadapt"], "use it with --agent legr"),
        (["--ratio", "0.5", "--agent", "legr"], "--ranking needs --budget"),
        (["--budget", "0.5x", "--agent", "legr", "--agent-option", "ranking=x.json"], "two rankings given"),
        (["--budget", "0.5x", "--agent", "legr"], "learned for model 'vgg16_bn', not 'resnet20'"),
        (["--budget", "0.5x", "--agent", "legr", "missing"], "not found"),
    ],
)
def test_bad_rankings_are_refused_in_one_line_before_anything_is_written(
    checkpoint, tmp_path, capsys, args, match
) -> None:
    graph = ModelGraph(create_model("vgg16_bn", 1, 10), (1, 32, 32))
    foreign = tmp_path / "vgg.json"
    Ranking("vgg16_bn", tuple((g.name, g.channels) for g in graph.groups), identity_pairs(graph), 0, 1.0).save(foreign)
    ranking = str(tmp_path / "missing.json") if args[-1] == "missing" else str(foreign)
    args = [a for a in args if a != "missing"]
    out = tmp_path / "run"
    fast = ["--backend", "torch-cpu", "--batch", "2", "--repeats", "3", "--runs", "1", "--rounds", "1"]
    assert main(["prune", "--checkpoint", str(checkpoint), "--out", str(out), "--ranking", ranking, *fast, *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in err, err
    assert not out.exists()
