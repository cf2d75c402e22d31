"""The long fine-tune again, other settings: what would a finished run's model score with a teacher, or another seed?

Rebuilds the model a finished ``hwprune prune`` run fine-tuned (NetAdapt's carried search model,
the plan cut from the original weights, or for a compare's control the unpruned model) exactly as
the run did, fine-tunes it again with ``--distill``, ``--seed``, ``--steps`` and ``--lr`` in place of
the run's, and prints its test accuracy beside the run's own. Nothing is timed: the architecture,
hence the latency, is the run's. It separates what a fine-tune setting adds from what the search's
plan does, and measures the fine-tune's seed noise.

    .venv/bin/python benchmarks/refinetune.py --run runs/bench-compare-long-kd/cells/netadapt-0.5x --distill 0
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, load_average, run  # noqa: E402

from hwprune.io import read_json  # noqa: E402
from hwprune.job import resume_config  # noqa: E402
from hwprune.job.budgeted import final_start, search_context  # noqa: E402
from hwprune.job.measure import evaluate, load_inputs, long_finetune  # noqa: E402
from hwprune.job.report import REPORT_KIND, REPORT_SCHEMA  # noqa: E402
from hwprune.job.tries import load_tries  # noqa: E402
from hwprune.latency import FlopsPredictor  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished budgeted prune run (or a compare cell)")
    p.add_argument("--distill", type=float, required=True, help="distillation weight of the new fine-tune (0: none)")
    p.add_argument("--seed", type=int, help="seed of the new fine-tune (default: the run's)")
    p.add_argument("--steps", type=int, help="fine-tune steps (default: the run's)")
    p.add_argument("--lr", type=float, help="fine-tune peak learning rate (default: the run's)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report = read_json(args.run / "report.json", REPORT_KIND, REPORT_SCHEMA)
    cfg = replace(resume_config(args.run), progress=False)
    loaded = load_inputs(cfg)
    start = time.perf_counter()
    if report["search"] is None:  # a compare's control: the unpruned model given the fine-tune
        model = copy.deepcopy(loaded.model)
    else:
        _ctx, evaluator = search_context(cfg, loaded, FlopsPredictor(loaded.graph, 1.0))  # scores nothing here
        taken = load_tries(args.run / "tries.json")[report["search"]["taken_try"] - 1]
        model, _plan = final_start(loaded, evaluator, taken)  # the search's seed, as the run rebuilt it
    given = {"distill": args.distill, "seed": args.seed, "finetune_steps": args.steps, "finetune_lr": args.lr}
    tuned = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    long_finetune(tuned, loaded, model)
    emit(
        {
            "benchmark": "refinetune",
            "command": "python " + " ".join(sys.argv),
            "run": str(args.run),
            "finetune": {
                "steps": tuned.finetune_steps,
                "lr": tuned.finetune_lr,
                "distill": tuned.distill,
                "seed": tuned.seed,
            },
            "test_accuracy": evaluate(model, loaded.data.test),
            "run_finetune": report["finetune"],
            "run_test_accuracy": report["pruned"]["test_accuracy"],
            "wall_s": round(time.perf_counter() - start, 1),
            "threads": args.threads,
            "load_average": load_average(),
        }
    )


if __name__ == "__main__":
    run(main)
