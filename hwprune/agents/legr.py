"""LeGR (Chin et al., CVPR 2020): learn a global filter ranking once, then prune to any budget by a threshold.

Every group gets an affine pair (alpha, kappa) over its channels' standardised L2 norms
(:mod:`hwprune.agents.ranking`); a plan is the widest one threshold on the resulting global scores
gives under the budget, priced by the latency table, not counted in FLOPs as in the paper. The
pairs are learned by regularised (aging) evolution: a population starts around the identity
(alpha = 1, kappa = 0, plain global L2 ranking); each generation draws a tournament, mutates its
fittest member on a few groups with Gaussian noise, scores the child's plan with the evaluator
(validation loss after its short fine-tune, at the budget the search runs for) and retires the
oldest member. The fittest pairs ever scored are the ranking.

The point of LeGR is that the ranking outlives its budget: the final history row carries it
(JSON, see :class:`~hwprune.agents.ranking.Ranking`), the job saves it as ``ranking.json``, and a
later search given it (``ranking=FILE``, or ``start``: an earlier search of the same job, whose
try missed or left slack) only thresholds it to its own budget and evaluates nothing.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hwprune.agents.base import CostMeter, SearchAgent, SearchContext, SearchResult, check_choice, register_agent
from hwprune.agents.ranking import Pairs, Ranking, Thresholder, identity_pairs, scores_of, standardised_norms
from hwprune.agents.state import SearchState, begin_search
from hwprune.errors import ConfigError
from hwprune.progress import bars_off

log = logging.getLogger(__name__)
FITNESS = ("loss", "accuracy")


@register_agent
class LegrAgent(SearchAgent):
    """Options, with the official LeGR values beside ours (defaults in brackets):

    - ``population`` [16; official 64]: members alive at once; the first ``population`` children
      are the initial population: the identity, then the identity with every group mutated.
    - ``tournament`` [4; official 16]: members drawn (without replacement) per generation; the
      fittest of them is the parent. A quarter of the population, as in the paper.
    - ``generations`` [200; official 400]: children bred after the initial population. One search
      scores ``population + generations`` plans (fewer when two children threshold to the same plan:
      the evaluator's cache answers). At the demo's evaluator setting (10 fine-tune steps, 1000
      validation images) a ResNet-20 plan scored in 0.7-1.9 s on the project's 2-core VM (the
      NetAdapt runs in benchmarks/results) and a child is priced in ~0.1 s, so the default 216
      scores take about 5 minutes (3 to 7).
    - ``mutate_share`` [0.1; official 10 % of layers]: share of the groups a child mutates (at least
      one): one of ResNet-20's 12 groups, two of MobileNetV2's 25.
    - ``noise`` [1.0; official 1]: standard deviation of the mutation: ``kappa += noise * N(0, 1)``
      and ``alpha *= exp(noise * N(0, 1))``, multiplicative in log space so alpha stays positive.
      On standardised norms, a kappa step of 1 moves a group by one standard deviation of its own
      norms: about a third of its channels around the middle.
    - ``fitness`` ["loss"]: the child's validation cross-entropy after the evaluator's short
      fine-tune (lower is fitter); "accuracy" is the paper's. As for NetAdapt, the loss ranks the
      near-equal children of one search on every sample's confidence rather than on a few samples.
    - ``ranking`` [None]: a saved ranking (``ranking.json``) to threshold instead of searching.
    - ``progress`` [True]: a tqdm bar over generations with the best fitness and an ETA.

    The fine-tune before each score is the evaluator's (steps, lr, seed): official LeGR fine-tunes
    each candidate 200 steps; the job's ``--search-finetune-steps`` sets ours for every agent alike.
    Each step draws from its own generator, seeded by (seed, step), so a resumed search draws what
    the uninterrupted one did and ends at the same ranking.
    """

    name = "legr"
    resume_neutral = frozenset({"progress"})

    def __init__(
        self,
        *,
        population: int = 16,
        tournament: int = 4,
        generations: int = 200,
        mutate_share: float = 0.1,
        noise: float = 1.0,
        fitness: str = "loss",
        ranking: str | None = None,
        progress: bool = True,
    ) -> None:
        if population < 2:
            raise ConfigError(f"population must be >= 2, got {population}")
        if not 1 <= tournament <= population:
            raise ConfigError(f"tournament must be in [1, population={population}], got {tournament}")
        if generations < 0:
            raise ConfigError(f"generations must be >= 0, got {generations}")
        if not 0 < mutate_share <= 1:
            raise ConfigError(f"mutate_share must be in (0, 1], got {mutate_share}")
        if not (math.isfinite(noise) and noise > 0):
            raise ConfigError(f"noise must be > 0, got {noise}")
        self.population = population
        self.tournament = tournament
        self.generations = generations
        self.mutate_share = mutate_share
        self.noise = noise
        self.fitness = check_choice("fitness", fitness, FITNESS)
        self.ranking = None if ranking is None else str(ranking)
        self.progress = progress

    # ---- search ------------------------------------------------------------------------------------
    def search(
        self, ctx: SearchContext, budget_ms: float, state_path: Path | None = None, start: SearchResult | None = None
    ) -> SearchResult:
        """Learn a ranking at ``budget_ms`` and threshold it there; or, given a ranking (the ``ranking``
        option, or one ``start`` learned earlier in the job), only threshold that one."""
        header, state, finished = begin_search(self, ctx, budget_ms, state_path)
        if finished is not None:
            return finished
        thresholder = Thresholder(ctx)
        thresholder.require_reachable(budget_ms)
        norms = standardised_norms(ctx.model, ctx.graph)
        given = self.given_ranking(ctx, start)
        if given is not None:
            ranking, source = given
            return self.threshold(ctx, thresholder, norms, ranking, source, budget_ms, header, state_path)
        return self.evolve(ctx, thresholder, norms, budget_ms, header, state, state_path)

    def given_ranking(self, ctx: SearchContext, start: SearchResult | None) -> tuple[Ranking, str] | None:
        """The ranking to reuse: the ``ranking`` file, else one an earlier search of the job learned, else None."""
        if self.ranking is not None:
            ranking = Ranking.load(self.ranking)
            ranking.check(ctx.model_name, ctx.graph, self.ranking)
            return ranking, self.ranking
        final = start.history[-1] if start is not None and start.history else {}
        if isinstance(final.get("ranking"), dict):
            ranking = Ranking.from_dict(final["ranking"], "the earlier search's ranking")
            ranking.check(ctx.model_name, ctx.graph, "the earlier search's ranking")
            return ranking, "earlier search"
        return None

    def threshold(
        self,
        ctx: SearchContext,
        thresholder: Thresholder,
        norms: dict[str, np.ndarray],
        ranking: Ranking,
        source: str,
        budget_ms: float,
        header: dict[str, Any],
        state_path: Path | None,
    ) -> SearchResult:
        """A given ranking thresholded to ``budget_ms``: predictions only, no evaluation."""
        meter = CostMeter(ctx)
        plan, ms, priced = thresholder.fit(scores_of(norms, ranking.pairs), budget_ms)
        row = {
            "iteration": 1,
            "final": True,
            "reused": source,
            "predicted_ms": ms,
            "budget_ms": budget_ms,
            "priced": priced,
            "keep": plan.keep,
            "ranking": ranking.to_dict(),
        }
        log.info("legr: thresholded the ranking from %s to %.3f ms (%.3f ms predicted)", source, budget_ms, ms)
        cost = meter.total()
        if state_path is not None:
            SearchState(header, 1, plan, [row], cost, done=True).save(state_path)
        return SearchResult(plan, [row], cost, ms)

    def evolve(
        self,
        ctx: SearchContext,
        thresholder: Thresholder,
        norms: dict[str, np.ndarray],
        budget_ms: float,
        header: dict[str, Any],
        state: SearchState | None,
        state_path: Path | None,
    ) -> SearchResult:
        """Regularised evolution over the affine pairs; every child is checkpointed as it is scored."""
        if state is None:
            history: list[dict[str, Any]] = []
            alive: list[int] = []  # indices into history of the living members, oldest first
            meter = CostMeter(ctx)
        else:
            history, alive = state.history, list(state.extra["alive"])
            meter = CostMeter(ctx, state.cost | {"resumes": state.cost.get("resumes", 0) + 1})
            log.info("legr: resuming after %d of %d children", len(history), self.total_steps)
        best = max(range(len(history)), key=lambda i: (history[i]["fitness"], -i), default=None)
        bar = tqdm(
            desc="legr",
            unit="child",
            total=self.total_steps,
            initial=len(history),
            disable=True if bars_off(self.progress) else None,
        )
        try:
            for step in range(len(history), self.total_steps):
                row = self.breed(ctx, step, history, alive)
                plan, ms, priced = thresholder.fit(scores_of(norms, self.pairs_of(row)), budget_ms)
                accuracy, loss = ctx.score(plan)
                row |= {
                    "fitness": -loss if self.fitness == "loss" else accuracy,
                    "accuracy": accuracy,
                    "loss": loss,
                    "predicted_ms": ms,
                    "priced": priced,
                    "keep": plan.keep,
                }
                history.append(row)
                alive.append(step)
                if len(alive) > self.population:
                    alive.pop(0)  # aging: the oldest member retires, however fit
                if best is None or row["fitness"] > history[best]["fitness"]:
                    best = step
                row["best_fitness"] = history[best]["fitness"]
                bar.update(1)
                bar.set_postfix(generation=max(step + 1 - self.population, 0), best=f"{row['best_fitness']:.4f}")
                log.info(
                    "legr child %d: %s fitness %.4f (acc %.4f), %.3f ms predicted; best %.4f",
                    step + 1,
                    "initial" if row["parent"] is None else f"of child {row['parent'] + 1}",
                    row["fitness"],
                    accuracy,
                    ms,
                    row["best_fitness"],
                )
                if state_path is not None:
                    SearchState(header, len(history), plan, history, meter.total(), extra={"alive": alive}).save(
                        state_path
                    )
        finally:
            bar.close()
        assert best is not None  # population >= 2: at least the identity was scored
        return self._conclude(ctx, thresholder, norms, budget_ms, header, history, alive, best, meter, state_path)

    def _conclude(
        self,
        ctx: SearchContext,
        thresholder: Thresholder,
        norms: dict[str, np.ndarray],
        budget_ms: float,
        header: dict[str, Any],
        history: list[dict[str, Any]],
        alive: list[int],
        best: int,
        meter: CostMeter,
        state_path: Path | None,
    ) -> SearchResult:
        """The fittest child's plan, with its pairs saved as the ranking that outlives this budget."""
        winner = history[best]
        plan, ms, _ = thresholder.fit(scores_of(norms, self.pairs_of(winner)), budget_ms)  # memoised: no new pricing
        cost = meter.total()
        ranking = Ranking(
            model=ctx.model_name,
            groups=tuple((g.name, g.channels) for g in ctx.graph.groups),
            pairs=self.pairs_of(winner),
            seed=ctx.seed,
            budget_ms=float(budget_ms),
            cost=cost,
            options=self.trajectory_options(),
            min_keep_ratio=ctx.min_keep_ratio,
            round_to=ctx.round_to,
        )
        final = {
            "iteration": len(history) + 1,
            "final": True,
            "best_child": best + 1,
            "fitness": winner["fitness"],
            "accuracy": winner["accuracy"],
            "loss": winner["loss"],
            "predicted_ms": ms,
            "budget_ms": budget_ms,
            "keep": plan.keep,
            "ranking": ranking.to_dict(),
        }
        rows = [*history, final]
        if state_path is not None:
            SearchState(header, len(history), plan, rows, cost, done=True, extra={"alive": alive}).save(state_path)
        return SearchResult(plan, rows, cost, ms)

    # ---- evolution steps ---------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.population + self.generations

    def breed(self, ctx: SearchContext, step: int, history: list[dict[str, Any]], alive: list[int]) -> dict[str, Any]:
        """Child ``step``'s pairs (not yet scored): an initial member, or a mutated tournament winner."""
        rng = np.random.default_rng([ctx.seed, step])
        names = [g.name for g in ctx.graph.groups]
        if step < self.population:
            parent, base = None, identity_pairs(ctx.graph)
            mutated = [] if step == 0 else names  # the first member is the identity itself
        else:
            drawn = rng.choice(len(alive), size=self.tournament, replace=False)
            parent = max((alive[int(i)] for i in drawn), key=lambda i: (history[i]["fitness"], i))  # ties: younger
            base = self.pairs_of(history[parent])
            count = max(1, round(self.mutate_share * len(names)))
            mutated = [names[int(i)] for i in sorted(rng.choice(len(names), size=count, replace=False))]
        pairs = dict(base)
        for name in mutated:
            alpha, kappa = pairs[name]
            da, dk = rng.normal(0.0, self.noise, size=2)
            pairs[name] = (alpha * math.exp(da), kappa + dk)
        return {
            "iteration": step + 1,
            "generation": max(step + 1 - self.population, 0),
            "parent": parent,
            "mutated": mutated,
            "pairs": {name: [a, k] for name, (a, k) in pairs.items()},
        }

    @staticmethod
    def pairs_of(row: dict[str, Any]) -> Pairs:
        return {name: (float(a), float(k)) for name, (a, k) in row["pairs"].items()}
