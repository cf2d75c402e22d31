"""One try's search, repeated while timing the plan's own widths moves its prediction off the target."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwprune.agents import SearchContext, SearchResult, get_agent
from hwprune.agents.state import finished_result
from hwprune.io import read_json, write_json
from hwprune.job.config import JobConfig
from hwprune.job.measure import Loaded
from hwprune.job.tries import summed_costs
from hwprune.latency import LatencyTable, Predictor
from hwprune.latency.densify import densify

log = logging.getLogger(__name__)

ROUND_KIND = "densify-round"
MAX_SEARCHES_PER_TRY = 3
"""Searches of one try before its plan is measured anyway (each later one on a table densified by the last)."""
DENSIFY_TOLERANCE = 0.005
"""A densified prediction this far over the target is within the timing noise of the new points: no new search."""


def search_try(
    cfg: JobConfig,
    loaded: Loaded,
    run: Path,
    ctx: SearchContext,
    table: LatencyTable,
    target: float,
    try_no: int,
    start: SearchResult | None = None,
) -> tuple[SearchContext, SearchResult, list[dict[str, Any]]]:
    """One try's search, searched again while timing the plan's own widths moves its prediction off ``target``.

    Over the target, the plan would likely miss the budget; more than ``--margin`` under it, the
    table had over-priced the plan and a wider one fits.

    Each search of try N has its own state file (``search-N.json``, then ``search-N.2.json``...), so a
    resumed job continues the latest one on the table as it was then saved. Each search is handed the
    one before as its ``start`` (the first, the last try's): NetAdapt continues that path rather than
    search from the full model again. When the searches run out with the last plan still over the
    target, the widest plan of the try that the final table puts under it is measured instead; the
    narrowest, if none is. Returns the context
    (with a predictor over the densified table), that plan with every search's cost summed, and
    what each densify round measured.
    """
    k = _latest_search(run, try_no)
    earlier = (finished_result(_state_path(run, try_no, j)) for j in range(1, k))  # a resumed try's
    results = [r for r in earlier if r is not None]
    rounds = [r for j in range(1, k + 1) if (r := _load_round(run, try_no, j)) is not None]
    while True:
        path = _state_path(run, try_no, k)
        start = results[-1] if results else start
        result = finished_result(path) or get_agent(cfg.agent, **cfg.agent_options).search(ctx, target, path, start)
        results.append(result)
        if not cfg.densify:
            break
        before = ctx.predict_ms(result.plan)
        record = densify(table, loaded.graph, result.plan, loaded.profiler, out=run / "lut.json")
        if record["points"]:
            ctx = replace(ctx, predictor=Predictor(table, loaded.graph))  # a new context: predictions are memoised
        after = ctx.predict_ms(result.plan)  # off the target only if the table changed under this search
        # Over the target: the plan may miss. Far under it: a wider (more accurate) plan fits; use it.
        off = after > target * (1 + DENSIFY_TOLERANCE) or after < target * (1 - cfg.margin)
        again = off and bool(record["points"]) and k < MAX_SEARCHES_PER_TRY  # on an unchanged table: the same plan
        if record["points"]:
            rounds.append(
                record
                | {
                    "search": path.name,
                    "predicted_before_ms": before,
                    "predicted_after_ms": after,
                    "searched_again": again,
                }
            )
            write_json(_round_path(run, try_no, k), {"kind": ROUND_KIND, "schema_version": 1, "round": rounds[-1]})
            shaky = f" ({record['unstable_blocks']} timed unstably)" if record.get("unstable_blocks") else ""
            log.info(
                f"search {try_no}: timed {len(record['points'])} layer widths the table had not measured{shaky}; "
                f"the plan now predicts {after:.3f} ms (was {before:.3f}, target {target:.3f})"
                + ("; searching again on the corrected table" if again else "")
            )
        if not again:
            break
        k += 1
    chosen = _fitting(results, ctx, target * (1 + DENSIFY_TOLERANCE)) if cfg.densify else result
    if chosen is not result:
        log.info(
            f"search {try_no}: on the final table search {results.index(chosen) + 1}'s plan "
            f"({ctx.predict_ms(chosen.plan):.3f} ms) fits the target {target:.3f} ms best (the last plan: "
            f"{ctx.predict_ms(result.plan):.3f} ms); measuring it"
        )
    cost = summed_costs([r.cost for r in results], list(results[-1].cost)) | {
        "densify_s": sum(r["seconds"] for r in rounds)
    }
    return ctx, SearchResult(chosen.plan, chosen.history, cost, lineage=chosen.lineage), rounds


def _fitting(results: list[SearchResult], ctx: SearchContext, limit_ms: float) -> SearchResult:
    """The plan predicted widest under ``limit_ms`` on the current table, else the narrowest one.

    Every width of every plan here has been timed by then, so these predictions compare like with like;
    a last plan within the band that stopped the searches is always the one returned.
    """
    predicted = [(ctx.predict_ms(r.plan), i) for i, r in enumerate(results)]
    under = [p for p in predicted if p[0] <= limit_ms]
    return results[max(under)[1] if under else min(predicted)[1]]


def _state_path(run: Path, try_no: int, k: int) -> Path:
    return run / (f"search-{try_no}.json" if k == 1 else f"search-{try_no}.{k}.json")


def _round_path(run: Path, try_no: int, k: int) -> Path:
    """Where the densify round after search ``k`` of a try is kept, so a resumed try still reports it."""
    return run / f"densify-{try_no}.{k}.json"


def _load_round(run: Path, try_no: int, k: int) -> dict[str, Any] | None:
    path = _round_path(run, try_no, k)
    return read_json(path, ROUND_KIND, 1)["round"] if path.exists() else None


def _latest_search(run: Path, try_no: int) -> int:
    """The last search of a try that left a state file (1 if none did)."""
    k = 1
    while _state_path(run, try_no, k + 1).exists():
        k += 1
    return k
