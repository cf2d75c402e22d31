"""Issue-4 targets: do pruned models meet their budget *as measured*, and does NetAdapt beat uniform?

For every model x budget x agent this runs the real `hwprune prune` job (one latency table per
model, shared by its runs; the same seed, data split and long fine-tune for every agent), then
prints one JSON summary: the share of final models whose measured median is <= the budget, and
test accuracy of each agent at each budget. Budgets are relative ("0.5x"), so the job judges each
final model against the unpruned model measured alongside it, and every agent's first search
target is the same fraction of the shared table's predicted unpruned latency: a slow spell during
one run cannot hand one agent a looser budget. The matrix of one model and seed is `hwprune
compare`'s (hwprune.compare, without its twins and control) in ``--out-dir/MODEL/seedN``: runs
already finished there are reused, so an interrupted benchmark continues where it stopped. A
finished ``hwprune compare`` directory placed there (e.g. ``benchmarks/compare.py``'s, linked as
``resnet20/seed0``) is read as it is, with its own table and settings (each row says its fine-tune
steps); its twins and control are left out.

``--seeds 0,1,2`` repeats every run with each seed (fine-tune order, search and candidate scores;
the table and the validation split stay shared) and compares the agents on their mean test
accuracy: one seed's difference of half a point is within what the seed alone moves (the test
split's own standard error is ~0.3 points at 89 %).

``--agents uniform,netadapt,legr`` adds LeGR as a user would run it: one search per model and
seed, at ``--legr-learn-at`` (the middle budget by default), and every other budget thresholds
the ``ranking.json`` that run left (``hwprune prune --ranking``), evaluating nothing. Its search
cost is reported summed over the budgets (the one search amortised) beside NetAdapt's and
uniform's for the same budgets, in ``search_cost``.

    python benchmarks/budget_adherence.py                      # the README's figures
    python benchmarks/budget_adherence.py --models resnet20 --budgets 0.5 --seeds 0,1,2
    python benchmarks/budget_adherence.py --agents uniform,netadapt,legr   # with LeGR
    python benchmarks/budget_adherence.py --agents uniform,amc --amc-option episodes=100
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, load_average, run  # noqa: E402

from hwprune.agents import available_agents  # noqa: E402
from hwprune.checkpoint import load_checkpoint  # noqa: E402
from hwprune.compare import CellOutcome, CompareConfig  # noqa: E402
from hwprune.compare.runner import resume_compare, start_compare  # noqa: E402
from hwprune.latency import TableSetting, profile_model  # noqa: E402
from hwprune.latency.build import BLOCK_WARMUP_S  # noqa: E402
from hwprune.train import resolve_precision  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def table_for(model: str, args: argparse.Namespace) -> Path:
    ckpt = ROOT / "checkpoints" / f"{model}-fmnist"
    _, spec, _ = load_checkpoint(ckpt)
    out = Path(args.out_dir) / model / "lut.json"
    setting = TableSetting(
        model=spec.name,
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
        input_size=spec.input_size,
        batch=args.batch,
        backend=args.backend,
        threads=args.threads,
        repeats=10,
        runs=5,
        warmup=10,
        warmup_s=BLOCK_WARMUP_S,  # the table `hwprune profile` makes
    )
    profile_model(setting, out, resume=out.exists(), progress=False)
    return out


AGENT_OPTIONS = ("netadapt", "amc", "legr")  # agents with a --NAME-option flag here


def compare_dir(model: str, seed: int, args: argparse.Namespace) -> Path:
    return Path(args.out_dir) / model / f"seed{seed}"


def run_matrix(
    model: str, seed: int, lut: Callable[[], Path], budgets: list[float], agents: list[str], args: argparse.Namespace
) -> list[dict]:
    """Every agent at every budget for (model, seed): the matrix of `hwprune compare` (its library), on the
    model's shared table (``lut()``, profiled when first needed), without twins or control; a finished
    matrix is read back, an interrupted one resumed."""
    out = compare_dir(model, seed, args)
    if (out / "compare.json").is_file():
        outcomes = [o for o in resume_compare(out) if o.cell.predictor == "table"]
    else:
        cfg = CompareConfig(
            checkpoint=str(ROOT / "checkpoints" / f"{model}-fmnist"),
            out=str(out),
            budgets=[f"{b}x" for b in budgets],
            agents=agents,
            twins=[],
            agent_options={a: o for a, o in args.agent_options.items() if a in agents and o},
            legr_learn_at=f"{args.legr_learn_at}x",
            control=False,
            job={
                "backend": args.backend,
                "threads": args.threads,
                "batch": args.batch,
                "lut": str(lut()),
                "seed": seed,
                "search_finetune_steps": args.search_finetune_steps,
                "search_bn_batches": args.search_bn_batches,
                "val_samples": args.val_samples,
                "finetune_steps": args.finetune_steps,
                "batch_size": args.batch_size,
                "round_to": args.round_to,
                "slack": args.slack,
                "densify": args.densify,
                "precision": args.precision,
            },
        )
        with contextlib.redirect_stdout(sys.stderr):  # the jobs' progress lines; stdout is the JSON
            outcomes = start_compare(cfg)
    return [row_of(model, seed, o) for o in outcomes]


def row_of(model: str, seed: int, outcome: CellOutcome) -> dict:
    """One cell as this benchmark's row (its own columns: adherence, budget use, densify counts)."""
    cell = outcome.cell
    assert cell.budget is not None and cell.agent is not None
    base = {"model": model, "budget": float(cell.budget.rstrip("x")), "agent": cell.agent, "seed": seed}
    if cell.ranking_from is not None:
        base["ranking_from"] = str(outcome.run.parent / cell.ranking_from / "ranking.json")
    if outcome.status != "done":
        return base | {"error": outcome.reason, "met": False}
    report = json.loads((outcome.run / "report.json").read_text())
    return base | {
        "budget_ms": round(report["budget"]["ms"], 3),
        "measured_ms": round(report["pruned"]["measured"]["summary"]["median_ms"], 3),
        "measured_iqr_ms": round(report["pruned"]["measured"]["summary"]["iqr_ms"], 3),
        "predicted_ms": round(report["pruned"]["predicted_ms"], 3),
        "budget_ms_at_start": round(report["budget"].get("ms_at_start", report["budget"]["ms"]), 3),
        "unpruned_ms": round(report["unpruned"]["measured"]["summary"]["median_ms"], 3),  # beside the final model
        "met": bool(report["budget_met"]),
        # share of the budget the final model uses: slack is latency the budget allowed and accuracy did not get
        "budget_used": round(report["pruned"]["measured"]["summary"]["median_ms"] / report["budget"]["ms"], 3),
        "test_accuracy": round(report["pruned"]["test_accuracy"], 4),
        "finetune_steps": report["finetune"]["steps"],
        "unpruned_test_accuracy": round(report["unpruned"]["test_accuracy"], 4),
        "search_s": round(report["search"]["cost"]["wall_s"], 1),
        "evaluations": report["search"]["cost"]["evaluations"],
        "precision": report["finetune"].get("precision", "fp32"),
        "tries": len(report["search"]["tries"]),
        "taken_try": report["search"].get("taken_try", len(report["search"]["tries"])),
        "densified_points": sum(len(r["points"]) for t in report["search"]["tries"] for r in t.get("densified", [])),
        "searched_again_after_densify": sum(
            r["searched_again"] for t in report["search"]["tries"] for r in t.get("densified", [])
        ),
    }


def search_cost(rows: list[dict]) -> list[dict]:
    """Search seconds and evaluations per (model, seed), summed over the budgets each agent ran.

    LeGR's sum holds its one search (the run at --legr-learn-at, with that run's later tries, which
    only re-threshold) and the other budgets' thresholdings: the search amortised over the budgets.
    Goal: at most a third of NetAdapt's for the same budgets.
    """
    out = []
    for model, seed in sorted({(r["model"], r["seed"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["seed"]) == (model, seed)]
        budgets = sorted({r["budget"] for r in mine}, reverse=True)
        entry: dict = {"model": model, "seed": seed, "budgets": budgets}
        for agent in sorted({r["agent"] for r in mine}):
            done = [r for r in mine if r["agent"] == agent and "search_s" in r]
            entry[agent] = {
                "search_s": round(sum(r["search_s"] for r in done), 1),
                "evaluations": sum(r["evaluations"] for r in done),
                "budgets_run": len(done),
                "search_s_per_budget": round(sum(r["search_s"] for r in done) / max(len(done), 1), 1),
            }
        if "legr" in entry:
            entry["legr"]["searches"] = sum(
                "ranking_from" not in r for r in mine if r["agent"] == "legr" and "search_s" in r
            )
        if "legr" in entry and "netadapt" in entry and entry["netadapt"]["search_s"] > 0:
            ratio = entry["legr"]["search_s"] / entry["netadapt"]["search_s"]
            entry["legr_over_netadapt"] = round(ratio, 3)
            entry["legr_at_most_a_third_of_netadapt"] = ratio <= 1 / 3
        out.append(entry)
    return out


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2``; argparse turns the ValueError of a bad entry into one usage line."""
    return [int(s) for s in text.split(",")]


def compare(rows: list[dict], agent: str = "netadapt") -> list[dict]:
    """``agent`` against uniform per model and budget: mean test accuracy over the seeds both agents
    finished (a failed run counts as 0), each seed's pair, and on how many seeds ``agent`` was >= uniform;
    beside it the mean of every other agent run on those seeds (NetAdapt's, for LeGR)."""
    acc = {(r["model"], r["budget"], r["agent"], r["seed"]): r.get("test_accuracy") or 0.0 for r in rows}
    cells = sorted({(m, b) for m, b, a, _ in acc if a == "uniform"})
    versus = []
    for m, b in cells:
        seeds = sorted(s for mm, bb, a, s in acc if (mm, bb, a) == (m, b, "uniform") and (m, b, agent, s) in acc)
        if not seeds:
            continue
        net, uni = [acc[m, b, agent, s] for s in seeds], [acc[m, b, "uniform", s] for s in seeds]
        others = sorted({a for mm, bb, a, _ in acc if (mm, bb) == (m, b)} - {agent, "uniform"})
        versus.append(
            {
                "model": m,
                "budget": b,
                "seeds": seeds,
                agent: round(statistics.fmean(net), 4),
                "uniform": round(statistics.fmean(uni), 4),
                **{
                    o: round(statistics.fmean(acc[m, b, o, s] for s in seeds), 4)
                    for o in others
                    if all((m, b, o, s) in acc for s in seeds)
                },
                "per_seed": [{"seed": s, agent: n, "uniform": u} for s, n, u in zip(seeds, net, uni, strict=True)],
                f"{agent}_at_least_uniform_seeds": sum(n >= u for n, u in zip(net, uni, strict=True)),
            }
        )
    return versus


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet20,mobilenetv2")
    p.add_argument("--budgets", default="0.7,0.5,0.3")
    p.add_argument("--agents", default="uniform,netadapt,amc,legr")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="inference threads (the demo's 1, see README)")
    p.add_argument(
        "--seeds",
        type=seed_list,
        default=[0],
        help="comma-separated seeds: every run once per seed; agents compared on the mean",
    )
    p.add_argument("--search-finetune-steps", type=int, default=10, help="fine-tune steps per candidate")
    p.add_argument(
        "--search-bn-batches", type=int, default=0, help="adaptive-BN batches per candidate (hwprune prune's)"
    )
    p.add_argument("--val-samples", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128, help="fine-tune batch size")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="fine-tune and candidate-score arithmetic (hwprune prune --precision)",
    )
    p.add_argument(
        "--slack",
        type=float,
        help="search once more for a wider plan when one measures this far under the budget "
        "(default: the job's, twice its margin; 0: off)",
    )
    p.add_argument("--round-to", type=int, default=1, help="kept channel counts are multiples of this (every agent)")
    p.add_argument(
        "--netadapt-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="NetAdapt option (value parsed as JSON), repeatable, e.g. initial_reduction=0.2",
    )
    p.add_argument(
        "--amc-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="AMC option (value parsed as JSON), repeatable, e.g. episodes=100",
    )
    p.add_argument(
        "--legr-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="LeGR option (value parsed as JSON), repeatable, e.g. generations=100",
    )
    p.add_argument(
        "--legr-learn-at",
        type=float,
        help="the budget (one of --budgets) LeGR searches at, once per model and seed; the other budgets "
        "threshold the ranking it learned (default: the middle budget)",
    )
    p.add_argument(
        "--no-densify",
        dest="densify",
        action="store_false",
        help="searches do not time their plans' off-grid widths (hwprune prune --no-densify)",
    )
    p.add_argument("--out-dir", default="runs/bench-budget")
    args = p.parse_args()
    args.agent_options = {
        agent: {k: json.loads(v) for k, v in (o.split("=", 1) for o in getattr(args, f"{agent}_option"))}
        for agent in AGENT_OPTIONS
    }
    args.netadapt_options = args.agent_options["netadapt"]  # as the summary has always recorded them
    agents, budgets = args.agents.split(","), [float(b) for b in args.budgets.split(",")]
    unknown = sorted(set(agents) - set(available_agents()))
    if unknown:
        p.error(f"--agents: unknown {', '.join(unknown)}; choose from {', '.join(available_agents())}")
    if args.legr_learn_at is None:
        args.legr_learn_at = sorted(budgets)[len(budgets) // 2]
    if "legr" in agents and args.legr_learn_at not in budgets:
        p.error(f"--legr-learn-at {args.legr_learn_at} is not one of --budgets {args.budgets}")

    start, rows = time.perf_counter(), []
    for model in args.models.split(","):
        lut = functools.cache(functools.partial(table_for, model, args))
        for seed in args.seeds:
            for row in run_matrix(model, seed, lut, budgets, agents, args):
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    versus = compare(rows)
    amc_versus = compare(rows, "amc")
    legr_versus = compare(rows, "legr")
    emit(
        {
            "benchmark": "budget_adherence",
            "command": "python " + " ".join(sys.argv),
            "setting": {
                "backend": args.backend,
                "batch": args.batch,
                "threads": args.threads,
                "seeds": args.seeds,
                "finetune_steps": args.finetune_steps,
                "search_finetune_steps": args.search_finetune_steps,
                "search_bn_batches": args.search_bn_batches,
                "val_samples": args.val_samples,
                "batch_size": args.batch_size,
                "round_to": args.round_to,
                "slack": args.slack,
                "netadapt_options": args.netadapt_options,
                "amc_options": args.agent_options["amc"],
                "legr_options": args.agent_options["legr"],
                "legr_learn_at": args.legr_learn_at if "legr" in agents else None,
                "precision": resolve_precision(args.precision),
            },
            "adherence": sum(r["met"] for r in rows) / len(rows),
            "adherence_by_agent": {a: statistics.fmean(r["met"] for r in rows if r["agent"] == a) for a in agents},
            "runs": rows,
            "netadapt_vs_uniform": versus,
            "netadapt_at_least_uniform": all(v["netadapt"] >= v["uniform"] for v in versus),
            "amc_vs_uniform": amc_versus,
            "amc_at_least_uniform": all(v["amc"] >= v["uniform"] for v in amc_versus) if amc_versus else None,
            "legr_vs_uniform": legr_versus,
            "legr_at_least_uniform": all(v["legr"] >= v["uniform"] for v in legr_versus) if legr_versus else None,
            "search_cost": search_cost(rows),
            "wall_s": round(time.perf_counter() - start, 1),
            "load_average": load_average(),
        }
    )


if __name__ == "__main__":
    run(main, "finished runs stay in --out-dir and the interrupted job resumes: run the same command to continue")
