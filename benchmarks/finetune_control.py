"""Equal SGD steps: does NetAdapt's lead over uniform survive giving uniform the steps NetAdapt's model had?

NetAdapt's final model is long fine-tuned from the model its search reached, each of whose
pruning steps was short-term fine-tuned (the paper's procedure), so before the long fine-tune
that every agent gets it has had (steps x --search-finetune-steps) SGD steps that uniform's
one-shot cut has not. For each budget of a finished ``budget_adherence.py`` out-dir, this
fine-tunes uniform's plan (its kept filters, from the original weights) for the long fine-tune
plus those extra steps, with the job's seed, learning rate and batch size, and prints its test
accuracy beside both cells'. Nothing is timed: the latency is the uniform cell's. Run from the
repository root, e.g.:

    .venv/bin/python benchmarks/finetune_control.py --out-dir runs/bench-budget23 --model resnet20 --budgets 0.7,0.5,0.3
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, run  # noqa: E402

from hwprune.errors import ConfigError  # noqa: E402
from hwprune.io import read_json  # noqa: E402
from hwprune.job import resume_config  # noqa: E402
from hwprune.job.measure import evaluate, load_inputs, long_finetune  # noqa: E402
from hwprune.job.report import REPORT_KIND, REPORT_SCHEMA  # noqa: E402
from hwprune.pruning import PruningPlan, apply_plan  # noqa: E402


def _cell(out_dir: Path, model: str, agent: str, budget: str) -> tuple[Path, dict]:
    run_dir = out_dir / model / f"{agent}-{budget}x"
    report = run_dir / "report.json"
    if not report.is_file():
        raise ConfigError(f"{run_dir} has no report.json: run benchmarks/budget_adherence.py for that cell first")
    return run_dir, read_json(report, REPORT_KIND, REPORT_SCHEMA)


def control(out_dir: Path, model: str, budget: str) -> dict:
    """Uniform's plan at ``budget`` fine-tuned for as many steps as NetAdapt's final model had, and both cells."""
    uniform_dir, uniform = _cell(out_dir, model, "uniform", budget)
    netadapt_dir, netadapt = _cell(out_dir, model, "netadapt", budget)
    search = netadapt["search"]
    steps = len(search["tries"][search["taken_try"] - 1].get("lineage", []))
    extra = steps * resume_config(netadapt_dir).search_finetune_steps
    cfg = resume_config(uniform_dir)
    cfg = replace(cfg, finetune_steps=cfg.finetune_steps + extra)
    torch.set_num_threads(cfg.threads)
    loaded = load_inputs(cfg)
    pruned, _ = apply_plan(loaded.model, PruningPlan.load(uniform_dir / "plan.json"), loaded.graph)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON summary alone
        long_finetune(cfg, loaded, pruned)
    return {
        "model": model,
        "budget": float(budget),
        "netadapt_pruning_steps": steps,
        "extra_steps": extra,
        "netadapt_test_accuracy": netadapt["pruned"]["test_accuracy"],
        "uniform_test_accuracy": uniform["pruned"]["test_accuracy"],
        "uniform_equal_steps_test_accuracy": round(evaluate(pruned, loaded.data.test), 4),
        "uniform_finetune_steps": cfg.finetune_steps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True, help="a budget_adherence.py --out-dir with finished cells")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--budgets", default="0.7,0.5,0.3")
    args = p.parse_args()
    rows = [control(Path(args.out_dir), args.model, b) for b in args.budgets.split(",")]
    emit({"benchmark": "finetune_control", "command": "python " + " ".join(sys.argv), "runs": rows})


if __name__ == "__main__":
    run(main)
