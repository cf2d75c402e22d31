"""What bf16 mixed precision does to a prune job's training: time and test accuracy, fp32 beside it.

``hwprune prune --precision auto`` fine-tunes and scores candidates under bf16 autocast where the
CPU has bf16 in hardware. This takes one pruned plan (a run's ``plan.json``), cuts it from the
checkpoint, and for each seed and precision runs the job's long fine-tune (augmented, cosine LR)
and one candidate score as the search does it (short fine-tune, validation subset), timing each;
test accuracy is always measured in fp32, as the job reports it. Prints JSON.

    .venv/bin/python benchmarks/studies/precision.py runs/demo-*/prune/plan.json --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import _r, emit, load_average, run  # noqa: E402

from hwprune import train  # noqa: E402
from hwprune.checkpoint import load_checkpoint  # noqa: E402
from hwprune.data import load_data  # noqa: E402
from hwprune.evaluator import Evaluator  # noqa: E402
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("plan", help="plan JSON to prune by (its channel counts; filters re-chosen by L2 norm)")
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20-fmnist"))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--search-finetune-steps", type=int, default=10)
    p.add_argument("--val-samples", type=int, default=1000)
    args = p.parse_args()
    model, spec, meta = load_checkpoint(args.checkpoint)
    data = load_data(str(meta.get("data", "fashion-mnist")), None, seed=int(meta.get("seed", 0)))
    graph = ModelGraph(model, (spec.in_channels, *spec.input_size))
    plan = PruningPlan.full(spec.name, graph).with_keep(PruningPlan.load(args.plan).keep)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for precision in ("fp32", train.resolve_precision("bf16")):
            ev = Evaluator(
                model,
                graph,
                data,
                finetune_steps=args.search_finetune_steps,
                seed=seed,
                val_samples=args.val_samples,
                precision=precision,
            )
            start = time.perf_counter()
            val_acc, val_loss = ev.score(plan)
            score_s = time.perf_counter() - start
            pruned, _ = apply_plan(model, plan, graph)
            start = time.perf_counter()
            train.fine_tune(
                pruned,
                data.train,
                args.finetune_steps,
                batch_size=args.batch_size,
                seed=seed,
                augment=data.augment,
                precision=precision,
            )
            rows.append(
                {
                    "seed": seed,
                    "precision": precision,
                    "finetune_s": _r(time.perf_counter() - start, 1),
                    "test_accuracy": round(train.evaluate(pruned, data.test), 4),
                    "candidate_score_s": _r(score_s, 2),
                    "candidate_val_loss": _r(val_loss, 4),
                    "candidate_val_acc": val_acc,
                }
            )
            print(rows[-1], file=sys.stderr)

    def mean(precision: str, key: str) -> float:
        return _r(statistics.fmean(r[key] for r in rows if r["precision"] == precision), 4)

    emit(
        {
            "benchmark": "precision",
            "command": "python " + " ".join(sys.argv),
            "bf16_native": train.native_bf16(),
            "plan_keep": plan.keep,
            "rows": rows,
            "mean": {
                prec: {k: mean(prec, k) for k in ("finetune_s", "test_accuracy", "candidate_score_s")}
                for prec in ("fp32", "bf16")
            },
            "load_average": load_average(),
        }
    )


if __name__ == "__main__":
    run(main)
