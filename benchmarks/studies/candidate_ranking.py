"""How cheap can NetAdapt's candidate score be and still pick the same candidates?

Each NetAdapt iteration keeps the candidate with the lowest validation loss after a short seeded
fine-tune, scored on a validation subset (``--search-finetune-steps``, ``--val-samples``); that
scoring is most of a search's time. This replays the iterations of finished searches (a run's
``search-*.json`` holds every candidate) and re-scores each iteration's candidates under several
cheaper settings and one reference (a longer fine-tune, the whole validation split). Prints JSON:
per setting, the seconds per evaluation, the share of iterations whose pick is the reference's
pick, the mean regret (the reference loss of the setting's pick minus the reference's best), and
the mean Spearman correlation of the two rankings. The trajectory is the run's own, so each
iteration is judged as the decision it was.

    .venv/bin/python benchmarks/studies/candidate_ranking.py runs/demo-*/prune --settings 10/1000,5/500,0/1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import emit, load_average, run  # noqa: E402

from hwprune.agents.state import STATE_KIND, STATE_SCHEMA  # noqa: E402
from hwprune.errors import ConfigError  # noqa: E402
from hwprune.evaluator import Evaluator  # noqa: E402
from hwprune.io import read_json  # noqa: E402
from hwprune.job import resume_config  # noqa: E402
from hwprune.job.measure import load_inputs  # noqa: E402
from hwprune.pruning import PruningPlan  # noqa: E402


def setting(text: str) -> tuple[int, int | None]:
    """ "STEPS/SAMPLES" (SAMPLES "all" for the whole validation split)."""
    try:
        steps, samples = text.split("/")
        return int(steps), None if samples == "all" else int(samples)
    except ValueError:
        raise ConfigError(f"setting {text!r} is not STEPS/SAMPLES, e.g. 10/1000 or 40/all") from None


def iterations(run_dir: Path, full: PruningPlan) -> list[list[PruningPlan]]:
    """Every iteration's candidate plans, from each search of the run (each search starts from the full model)."""
    out = []
    for path in sorted(run_dir.glob("search-*.json")):
        plan = full
        for step in read_json(path, STATE_KIND, STATE_SCHEMA).get("history", []):
            out.append([plan.with_keep({c["group"]: c["keep"]}) for c in step["candidates"]])
            plan = plan.with_keep({step["group"]: step["keep"]})
    return [c for c in out if len(c) > 1]


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished NetAdapt prune run directory")
    ap.add_argument("--settings", default="10/1000,5/500,0/1000", help="STEPS/SAMPLES settings to grade")
    ap.add_argument("--reference", default="40/all", help="the setting taken as the truth")
    ap.add_argument("--max-iterations", type=int, default=0, help="grade only the first N iterations (0: all)")
    args = ap.parse_args()
    names = [args.reference] + [s for s in args.settings.split(",") if s != args.reference]
    parsed = {name: setting(name) for name in names}  # a malformed setting fails before any loading
    cfg = resume_config(args.run)
    loaded = load_inputs(cfg)
    iters = iterations(args.run, PruningPlan.full(loaded.spec.name, loaded.graph))
    if args.max_iterations:
        iters = iters[: args.max_iterations]
    if not iters:
        raise SystemExit(f"{args.run} holds no search iterations with two or more candidates")
    losses: dict[str, list[list[float]]] = {}
    seconds: dict[str, float] = {}
    for name in names:
        steps, samples = parsed[name]
        ev = Evaluator(
            loaded.model, loaded.graph, loaded.data, finetune_steps=steps, seed=cfg.seed, val_samples=samples
        )
        start = time.perf_counter()
        losses[name] = []
        with tqdm(total=sum(map(len, iters)), desc=f"scoring at {name}", unit="plan", leave=False) as bar:
            for cands in iters:
                losses[name].append([ev.score(p)[1] for p in cands])
                bar.update(len(cands))
        seconds[name] = (time.perf_counter() - start) / max(ev.evaluations, 1)
        print(f"{name}: {ev.evaluations} evaluations, {seconds[name]:.2f} s each", file=sys.stderr)
    ref = losses[args.reference]
    graded: dict[str, Any] = {}
    for name in names[1:]:
        rows = list(zip(losses[name], ref, strict=True))
        picks = [(int(np.argmin(x)), int(np.argmin(r)), r) for x, r in rows]  # (its pick, the best, reference)
        graded[name] = {
            "s_per_evaluation": round(seconds[name], 3),
            "same_pick_as_reference": round(statistics.fmean(p == b for p, b, _ in picks), 3),
            "mean_regret_loss": round(statistics.fmean(r[p] - r[b] for p, b, r in picks), 4),
            "mean_spearman": round(statistics.fmean(spearman(x, r) for x, r in rows), 3),
        }
    emit(
        {
            "run": str(args.run),
            "iterations": len(iters),
            "candidates": sum(len(c) for c in iters),
            "reference": args.reference,
            "reference_s_per_evaluation": round(seconds[args.reference], 3),
            "settings": graded,
            "load_average": load_average(),
        }
    )


if __name__ == "__main__":
    run(main)
