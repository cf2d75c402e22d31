"""AMC: the Gymnasium channel-pruning env and the stable-baselines3 DDPG agent, on tiny models and fakes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from test_agents import (
    AlignedPredictor,
    Interrupting,
    MacsPredictor,
    OddWidthsSlow,
    ProxyEvaluator,
    make_ctx,
    real_evaluator,
    tiny,  # noqa: F401  (a fixture)
    tiny_net,
)

import hwprune
from hwprune.agents import SearchContext, get_agent
from hwprune.agents.amc import AMCAgent
from hwprune.agents.amc_env import FEATURES, ChannelPruningEnv
from hwprune.agents.amc_sb3 import DecayingTruncatedNormalNoise
from hwprune.agents.state import finished_result
from hwprune.errors import BudgetError, ConfigError
from hwprune.models import create_model
from hwprune.pruning import ModelGraph, PruningPlan

ROOT = Path(__file__).resolve().parents[1]  # the probe imports this checkout's hwprune
FAST = {"episodes": 10, "warmup_episodes": 4, "hidden": 32, "progress": False}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small():
    """The tiny CNN (four groups) with a MACs predictor and a proxy evaluator: search mechanics only."""
    torch.manual_seed(0)
    model = tiny_net()
    return model, ModelGraph(model, (1, 32, 32))


@pytest.fixture(scope="module")
def resnet():
    model = create_model("resnet20", 1, 10)
    return model, ModelGraph(model, (1, 16, 16))


def proxy_ctx(model, graph, predictor=None, **kw) -> SearchContext:
    return make_ctx(model, graph, predictor or MacsPredictor(graph), ProxyEvaluator(graph), **kw)


def episode(env: ChannelPruningEnv, actions, seed: int | None = None) -> tuple[list[np.ndarray], list[dict]]:
    obs, _ = env.reset(seed=seed)
    observations, infos = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([a], dtype=np.float32))
        observations.append(obs)
        infos.append(info)
        assert not truncated
        if terminated:
            break
    assert terminated and reward == info["pruning"]["learning_reward"]
    return observations, infos


# ---- the environment -----------------------------------------------------------------------------
def test_env_passes_the_gymnasium_and_sb3_checkers_without_a_warning(small) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    model, graph = small
    ctx = proxy_ctx(model, graph)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(ChannelPruningEnv(ctx, 0.5 * ctx.predict_ms(ctx.full_plan())), skip_render_check=True)
        sb3_check_env(ChannelPruningEnv(ctx, 0.5 * ctx.predict_ms(ctx.full_plan())), warn=True)
    assert [str(w.message) for w in caught] == []


def test_env_is_registered_by_import_hwprune_and_made_by_gymnasium(small) -> None:
    model, graph = small
    ctx = proxy_ctx(model, graph)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # gymnasium.make wraps the env in its passive checker
        env = gymnasium.make(hwprune.ENV_ID, ctx=ctx, target_ms=0.6 * ctx.predict_ms(ctx.full_plan()))
        obs, _ = env.reset(seed=0)
        for _ in graph.groups:
            _, reward, terminated, _, _ = env.step(env.action_space.sample())
    assert [str(w.message) for w in caught] == []
    assert isinstance(env.unwrapped, ChannelPruningEnv) and terminated and isinstance(reward, float)
    assert obs.shape == (len(FEATURES),) and obs.dtype == np.float32
    # registered by a string entry point: `import hwprune` loads neither the agents nor stable-baselines3
    probe = "import sys, hwprune, gymnasium; assert hwprune.ENV_ID in gymnasium.registry; "
    probe += "print(sorted(m for m in ('hwprune.agents', 'stable_baselines3', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_observation_is_amc_s_layer_embedding_scaled_to_unit_range(resnet) -> None:
    model, graph = resnet
    ctx = proxy_ctx(model, graph)
    env = ChannelPruningEnv(ctx, 0.5 * ctx.predict_ms(ctx.full_plan()))
    observations, _ = episode(env, [0.0] * len(graph.groups), seed=0)
    table = np.array(observations[:-1])
    assert table.shape == (len(graph.groups), len(FEATURES))
    assert ((table >= 0) & (table <= 1)).all()
    col = {name: table[:, i] for i, name in enumerate(FEATURES)}
    assert col["index"][0] == 0 and col["index"][-1] == 1
    assert set(col["kind"]) == {0.0}  # every ResNet-20 group is rooted at a dense conv
    assert col["c_out"].min() == 0 and col["c_out"].max() == 1  # 16 ... 64 channels
    assert col["reduced"][0] == 0 and (np.diff(col["reduced"]) >= 0).all()  # what MACs remove only grows
    assert col["rest"][-1] == 0 and col["rest"][0] > col["rest"][-2]
    assert col["previous_action"][0] == 1.0


def test_kind_feature_tells_depthwise_and_linear_groups_apart() -> None:
    model = create_model("mobilenetv2", 1, 10)
    graph = ModelGraph(model, (1, 32, 32))
    ctx = proxy_ctx(model, graph)
    env = ChannelPruningEnv(ctx, 0.6 * ctx.predict_ms(ctx.full_plan()))
    kinds = set(np.round(env.static[:, 1] * 3).astype(int))
    shapes = {s.name: s for s in graph.layer_shapes()}
    expected = {1 if shapes[g.name].depthwise else 0 for g in graph.groups}
    assert kinds == expected


@pytest.mark.parametrize("predictor", ["macs", "aligned", "odd-slow"])
@pytest.mark.parametrize("round_to", [1, 4])
def test_every_episode_of_random_actions_meets_the_target(resnet, predictor: str, round_to: int) -> None:
    """The property the budget clipping promises: whatever the actions, the plan is under the target; a step
    is limited only when the keep asked for cannot meet it, and then takes the widest narrower one that can."""
    model, graph = resnet
    price = {"macs": MacsPredictor, "aligned": AlignedPredictor, "odd-slow": OddWidthsSlow}[predictor](graph)
    ctx = proxy_ctx(model, graph, price, round_to=round_to)
    full = ctx.predict_ms(ctx.full_plan())
    rng = np.random.default_rng(0)
    for fraction in (0.7, 0.4):
        target = max(fraction * full, ctx.floor_ms())
        env = ChannelPruningEnv(ctx, target)
        for _ in range(40):
            actions = rng.choice([-1.0, 1.0], size=len(graph.groups)) if rng.random() < 0.2 else rng.uniform(-1, 1, 12)
            obs, _ = env.reset()
            for t, a in enumerate(actions):
                obs, _, terminated, _, info = env.step(np.array([a], dtype=np.float32))
                assert env.observation_space.contains(obs)
                allowed = ctx.allowed_keeps(graph.groups[t].name)
                assert info["keep"] in allowed and info["desired_keep"] in allowed
                if info["limited"]:
                    assert not env.fits(t, info["desired_keep"])
                    wider = [k for k in allowed if info["keep"] < k <= info["desired_keep"]]
                    assert not any(env.fits(t, k) for k in wider)
            assert terminated
            names = [g.name for g in graph.groups]
            plan = ctx.full_plan().with_keep(dict(zip(names, info["pruning"]["keep"], strict=True)))
            assert price.predict_ms(plan) <= target
            assert info["pruning"]["predicted_ms"] == pytest.approx(price.predict_ms(plan))
            plan.validate(graph)


def test_actions_map_to_keep_ratios_in_the_minimum_to_full_range(small) -> None:
    model, graph = small
    ctx = proxy_ctx(model, graph, round_to=4)
    env = ChannelPruningEnv(ctx, ctx.predict_ms(ctx.full_plan()))  # a loose target: nothing is limited
    _, infos = episode(env, [1.0, -1.0, 0.0, 1.0])
    g = graph.groups
    assert [i["keep"] for i in infos] == [g[0].channels, ctx.min_keep(g[1].name), 8, g[3].channels]
    assert [i["limited"] for i in infos] == [False] * 4
    assert infos[0]["action_taken"] == 1.0  # the action that gives the keep taken: 4 of 16 is a ratio of 0.25
    assert infos[1]["action_taken"] == pytest.approx(2 * (4 / 16 - 0.1) / 0.9 - 1)
    assert all(env.keep_for(gr, env.action_for(gr, i["keep"])) == i["keep"] for gr, i in zip(g, infos, strict=True))


def test_same_seed_twice_gives_the_same_observations_actions_and_plan(small) -> None:
    model, graph = small
    runs = []
    for _ in range(2):
        ctx = proxy_ctx(model, graph)
        env = ChannelPruningEnv(ctx, 0.5 * ctx.predict_ms(ctx.full_plan()))
        env.action_space.seed(7)
        env.reset(seed=7)
        actions = [env.action_space.sample()[0] for _ in graph.groups]
        runs.append(episode(env, actions, seed=7))
    (obs_a, info_a), (obs_b, info_b) = runs
    assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b, strict=True))
    assert info_a == info_b


def test_rewards_forms_and_the_moving_average_baseline(small) -> None:
    model, graph = small
    ctx = proxy_ctx(model, graph)
    target = 0.6 * ctx.predict_ms(ctx.full_plan())
    env = ChannelPruningEnv(ctx, target, reward="accuracy", baseline_alpha=0.5)
    first = episode(env, [1.0, 1.0, 1.0, 1.0])[1][-1]["pruning"]
    second = episode(env, [-1.0, -1.0, -1.0, -1.0])[1][-1]["pruning"]
    assert first["learning_reward"] == 0.0 and first["baseline"] == first["reward"]  # the first sets the average
    assert second["baseline"] == first["reward"]
    assert second["learning_reward"] == pytest.approx(second["reward"] - first["reward"])
    assert env.baseline == pytest.approx(first["reward"] + 0.5 * (second["reward"] - first["reward"]))
    plain = ChannelPruningEnv(ctx, target, reward="error_log_latency", baseline_alpha=None)
    rec = episode(plain, [0.0] * 4)[1][-1]["pruning"]
    assert rec["learning_reward"] == rec["reward"] < 0 and rec["baseline"] is None
    assert rec["reward"] == pytest.approx(-(1 - rec["accuracy"]) * math.log(rec["predicted_ms"] * 1000))
    with pytest.raises(ConfigError, match="reward must be one of"):
        ChannelPruningEnv(ctx, target, reward="flops")


def test_env_refuses_an_impossible_target_and_steps_past_the_end(small) -> None:
    model, graph = small
    ctx = proxy_ctx(model, graph, min_keep_ratio=0.5)
    with pytest.raises(BudgetError, match="impossible"):
        ChannelPruningEnv(ctx, 0.9 * ctx.floor_ms())
    env = ChannelPruningEnv(ctx, ctx.floor_ms())  # exactly the floor: every step is forced to it
    _, infos = episode(env, [1.0] * 4)
    assert infos[-1]["pruning"]["keep"] == list(ctx.floor_plan().keep.values())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, dtype=np.float32))


def test_scores_do_not_move_the_global_random_states(small) -> None:
    """The evaluator reseeds the global RNGs for its fine-tune; a learner drawing from them must not notice."""
    model, graph = small
    ctx = proxy_ctx(model, graph)

    def reseeding(plan: PruningPlan) -> tuple[float, float]:
        torch.manual_seed(123)
        np.random.seed(123)
        return 0.5, 1.0

    env = ChannelPruningEnv(ctx, 0.6 * ctx.predict_ms(ctx.full_plan()), score=reseeding)
    env.reset()
    torch.manual_seed(0)
    np.random.seed(0)
    for _ in graph.groups:
        env.step(np.zeros(1, dtype=np.float32))
    after_episode = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    assert after_episode == (torch.rand(1).item(), np.random.rand())  # as if no score had been computed


# ---- the exploration noise -----------------------------------------------------------------------
def test_noise_is_a_seeded_truncated_normal_decaying_after_the_warm_up() -> None:
    noise = DecayingTruncatedNormalNoise(0.5, 0.95, hold=3, seed=0)
    draws = np.concatenate([noise() for _ in range(2000)])
    assert np.abs(draws).max() <= 1.0 and 0.4 < draws.std() < 0.5  # truncated at 2 sigma: std 0.88 sigma
    for _ in range(3):
        noise.reset()
    assert noise.sigma == 0.5  # the warm-up draws no noise, so the decay starts after it
    noise.reset()
    noise.reset()
    assert noise.sigma == pytest.approx(0.5 * 0.95**2)
    again = DecayingTruncatedNormalNoise(0.5, 0.95, hold=3, seed=0)
    assert np.array_equal(np.concatenate([again() for _ in range(2000)]), draws)


# ---- the agent ---------------------------------------------------------------------------------------
def test_agent_options_are_checked_and_misspellings_suggested() -> None:
    assert "amc" in hwprune.agents.available_agents()
    with pytest.raises(ConfigError, match="did you mean episodes") as err:
        get_agent("amc", episdes=5)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="reward must be one of accuracy, error_log_latency"):
        get_agent("amc", reward="flops")
    with pytest.raises(ConfigError, match="warmup_episodes"):
        get_agent("amc", episodes=10, warmup_episodes=11)
    options = get_agent("amc").options()
    assert json.loads(json.dumps(options)) == options
    assert (options["hidden"], options["actor_lr"], options["critic_lr"], options["tau"]) == (300, 1e-4, 1e-3, 0.01)
    assert (options["gamma"], options["batch_size"], options["noise_sigma"], options["noise_decay"]) == (
        1.0,
        64,
        0.5,
        0.95,
    )


def test_a_short_learn_returns_the_best_plan_under_the_budget(small) -> None:
    model, graph = small
    ctx = proxy_ctx(model, graph)
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    result = get_agent("amc", **FAST).search(ctx, budget)
    assert result.predicted_ms <= budget and result.predicted_ms == ctx.predictor.predict_ms(result.plan)
    result.plan.validate(graph)
    rows = [r for r in result.history if "episode" in r]
    assert [r["phase"] for r in rows] == ["warmup"] * 4 + ["policy"] * 6 + ["final"]
    assert all(r["predicted_ms"] <= budget for r in rows)
    assert [r["noise_sigma"] is None for r in rows] == [True] * 4 + [False] * 6 + [True]
    assert rows[5]["noise_sigma"] == pytest.approx(0.95 * rows[4]["noise_sigma"])
    best = max(rows, key=lambda r: r["reward"])
    assert result.plan.key() == tuple(best["keep"]) and result.history[-1]["best_episode"] == best["episode"]
    assert result.cost["evaluations"] == 0  # the proxy evaluator counts nothing; the real one is tested below
    json.dumps(result.history)


def test_same_seed_twice_searches_alike_and_another_seed_does_not(small) -> None:
    model, graph = small

    def run(seed: int) -> list[tuple]:
        ctx = SearchContext("tiny", model, graph, MacsPredictor(graph), ProxyEvaluator(graph), seed=seed)
        result = get_agent("amc", **FAST).search(ctx, 0.5 * ctx.predict_ms(ctx.full_plan()))
        return [(tuple(r["actions"]), tuple(r["keep"]), r["reward"]) for r in result.history if "episode" in r]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_the_policy_learns_to_beat_random_warm_up_on_a_planted_problem(resnet) -> None:
    """Accuracy here grows with the square root of each group's kept share, so spreading the cut evenly
    beats random plans; the trained policy's episodes must do better than the random warm-up's."""
    model, graph = resnet
    ctx = proxy_ctx(model, graph)
    result = get_agent("amc", episodes=50, warmup_episodes=15, hidden=64, progress=False).search(
        ctx, 0.5 * ctx.predict_ms(ctx.full_plan())
    )
    rows = [r for r in result.history if "episode" in r]
    warm = [r["reward"] for r in rows if r["phase"] == "warmup"]
    late = [r["reward"] for r in rows if r["phase"] != "warmup"][-10:]
    assert np.mean(late) > np.mean(warm) and result.history[-1]["phase"] != "warmup"


def test_resume_after_an_interrupted_search_reaches_the_same_plan(tiny, tmp_path: Path) -> None:  # noqa: F811
    """With the real evaluator (which reseeds the global RNGs on every score): interrupted mid-search, the
    state holds the finished episodes; the resumed search replays them without evaluating and ends where
    the uninterrupted one did."""
    model, graph, _ = tiny
    budget = 0.5 * MacsPredictor(graph).predict_ms(PruningPlan.full("tiny", graph))
    reference = get_agent("amc", **FAST).search(
        make_ctx(model, graph, MacsPredictor(graph), real_evaluator(tiny)), budget
    )
    ref_rows = [(r["keep"], r["accuracy"], r["reward"]) for r in reference.history if "episode" in r]
    evaluations = reference.cost["evaluations"]
    assert evaluations >= 6

    state = tmp_path / "amc.json"
    broken = make_ctx(model, graph, MacsPredictor(graph), Interrupting(real_evaluator(tiny), after=5))
    with pytest.raises(KeyboardInterrupt):
        get_agent("amc", **FAST).search(broken, budget, state)
    saved = json.loads(state.read_text())
    assert not saved["done"] and 5 <= saved["iteration"] < len(ref_rows)

    fresh = real_evaluator(tiny)
    resumed = get_agent("amc", **(FAST | {"progress": True})).search(
        make_ctx(model, graph, MacsPredictor(graph), fresh), budget, state
    )
    assert resumed.plan.key() == reference.plan.key()
    assert [(r["keep"], r["accuracy"], r["reward"]) for r in resumed.history if "episode" in r] == ref_rows
    assert fresh.evaluations == evaluations - 5 and resumed.cost["resumes"] == 1
    assert finished_result(state).plan.key() == reference.plan.key()
    # a finished state answers at once
    idle = ProxyEvaluator(graph)
    again = get_agent("amc", **FAST).search(make_ctx(model, graph, MacsPredictor(graph), idle), budget, state)
    assert again.plan.key() == reference.plan.key() and idle.calls == 0


def test_an_earlier_search_s_scores_are_reused(small) -> None:
    """A new try (or a corrected table) searches again: plans the earlier search scored cost nothing."""
    model, graph = small
    ctx = proxy_ctx(model, graph)
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    first = get_agent("amc", **FAST).search(ctx, budget)
    counting = proxy_ctx(model, graph)
    again = get_agent("amc", **FAST).search(counting, budget, start=first)
    assert again.plan.key() == first.plan.key() and counting.evaluator.calls == 0


def test_state_of_another_search_is_refused(small, tmp_path: Path) -> None:
    model, graph = small
    ctx = proxy_ctx(model, graph)
    budget = 0.5 * ctx.predict_ms(ctx.full_plan())
    state = tmp_path / "s.json"
    get_agent("amc", **FAST).search(ctx, budget, state)
    with pytest.raises(ConfigError, match=r"belongs to another search \(options: {.episodes.: 10"):
        get_agent("amc", **(FAST | {"episodes": 12})).search(ctx, budget, state)
    assert isinstance(get_agent("amc", **(FAST | {"progress": True})), AMCAgent)  # progress is resume-neutral
    get_agent("amc", **(FAST | {"progress": True})).search(ctx, budget, state)


# ---- hwprune prune --agent amc ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from hwprune.checkpoint import save_checkpoint
    from hwprune.models import ModelSpec

    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    out = tmp_path_factory.mktemp("ck") / "resnet20"
    save_checkpoint(out, spec.build(), spec, {"data": "synthetic", "seed": 0})
    return out


PRUNE_FAST = [
    *("--batch", "2", "--repeats", "3", "--runs", "1", "--rounds", "1", "--settle-s", "0"),
    *("--finetune-steps", "2", "--batch-size", "16", "--search-finetune-steps", "0", "--val-samples", "64"),
    *("--calibration-plans", "4", "--max-tries", "1", "--margin", "0.2"),
]


def test_prune_with_the_amc_agent_end_to_end(checkpoint: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from conftest import FakeProfiler

    from hwprune.cli import main
    from hwprune.job import measure

    monkeypatch.setattr(measure, "get_profiler", lambda name, **kw: FakeProfiler(**kw))
    out = tmp_path / "run"
    args = ["prune", "--checkpoint", str(checkpoint), "--budget", "0.5x", "--agent", "amc", "--out", str(out)]
    options = ["--agent-option", "episodes=6", "--agent-option", "warmup_episodes=3", "--agent-option", "hidden=16"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fake device's timing-noise warnings
        assert main([*args, *options, "--backend", "torch-cpu", *PRUNE_FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["budget_met"] and report["search"]["agent"] == "amc"
    tried = report["search"]["tries"][0]
    assert tried["predicted_ms"] <= tried["target_ms"] * 1.005
    episodes = [r for r in tried["history"] if "episode" in r]
    assert len(episodes) == 7 and all(r["predicted_ms"] <= tried["target_ms"] for r in episodes)
    assert json.loads((out / "job.json").read_text())["config"]["agent_options"]["noise_decay"] == 0.95
    assert report["search"]["cost"]["evaluations"] >= 1


def test_prune_refuses_a_misspelled_amc_option_in_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from hwprune.cli import main

    out = tmp_path / "run"
    args = ["prune", "--checkpoint", str(checkpoint), "--budget", "0.5x", "--agent", "amc", "--out", str(out)]
    assert main([*args, "--agent-option", "episdoes=5", "--backend", "torch-cpu", *PRUNE_FAST]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "agent 'amc' has no option 'episdoes': did you mean episodes" in lines[0], err
    assert "Traceback" not in err and not out.exists()
