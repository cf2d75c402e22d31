"""``report.md``: the matrix as a person reads it: setting, plot, table, failures, device, command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwprune.compare.config import CompareConfig
from hwprune.io import atomic_write_text
from hwprune.job.report import threads_phrase


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _met(row: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**", None: "-"}[row["budget_met"]]


def render(
    cfg: CompareConfig, rows: list[dict[str, Any]], references: dict[str, Any], fingerprint: dict[str, Any], model: str
) -> str:
    job = cfg.job
    bn = (
        f"BN statistics re-estimated on {job['search_bn_batches']} batches and " if job.get("search_bn_batches") else ""
    )
    taught = f" (distilled from the unpruned model, weight {job['distill']:g})" if job.get("distill") else ""
    lines = [
        f"# hwprune compare: {model}",
        "",
        f"Every agent at every budget through the measured budget loop of `hwprune prune`, on one latency table "
        f"(`{cfg.table_path()}`), backend `{job.get('backend')}`, batch {job.get('batch')}, "
        f"{threads_phrase(fingerprint.get('threads') or job.get('threads'))}, seed {job.get('seed', 0)}. "
        f"Candidates are scored after {bn}{job.get('search_finetune_steps')} fine-tune steps on "
        f"{job.get('val_samples')} validation images; every "
        f"final model gets the same {job.get('finetune_steps')}-step fine-tune{taught} and is measured on the device. "
        "A budget "
        "is met when the measured median is at most the budget, judged against the unpruned model measured beside "
        "it. *MACs twins* run the same agent with a predictor proportional to MACs, targeted at the budget's "
        "fraction of the unpruned MACs, and are judged against the same latency budget. Accuracy change is against "
        "the unpruned model given the same fine-tune "
        f"({_f(references['control_test_accuracy'], '.4f')}; the checkpoint as trained: "
        f"{_f(references['checkpoint_test_accuracy'], '.4f')}).",
        "",
        "![test accuracy against measured latency](pareto.png)",
        "",
        "| agent | predictor | budget | budget, ms | predicted, ms | measured, ms (IQR) | met | test acc | change "
        "| params | MACs | search, s | evals | tries |",
        "|---" * 14 + "|",
    ]
    for r in rows:
        if r["status"] != "done":
            lines.append(f"| {r['agent']} | {r['predictor']} | {r['budget'] or '-'} | {r['status']} |" + " |" * 10)
            continue
        lines.append(
            f"| {r['agent']} | {r['predictor']} | {r['budget'] or '-'} | {_f(r['budget_ms'], '.3f')} "
            f"| {_f(r['predicted_ms'], '.3f')} | {r['measured_ms']:.3f} ({r['measured_iqr_ms']:.3f}) | {_met(r)} "
            f"| {r['test_accuracy']:.4f} | {_f(r['accuracy_change'], '+.4f')} | {r['params']:,} | {r['macs']:,} "
            f"| {r['search_wall_s']:.1f} | {r['evaluations']} | {r['tries'] or '-'} |"
        )
    lines.append("")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["Cells that failed (the rest of the matrix ran):", ""]
        lines += [f"- `{r['cell']}`: {r['reason']}" for r in failed] + [""]
    pending = [r["cell"] for r in rows if r["status"] == "pending"]
    if pending:
        lines += [f"Not run yet: {', '.join(pending)} (continue with `hwprune compare --resume {cfg.out}`).", ""]
    learned = sorted({r["ranking_from"] for r in rows if r["ranking_from"]})
    if learned:
        lines += [
            f"LeGR searched once ({', '.join(learned)}); its other budgets threshold that ranking and evaluate "
            "nothing, so their search time is near zero.",
            "",
        ]
    continued = [f"{r['cell']} from {r['path_from']}" for r in rows if r["path_from"]]
    if continued:
        lines += [
            f"NetAdapt walks one path through ever smaller plans, so its later budgets continued the path of an "
            f"earlier cell ({', '.join(continued)}); their search time is what they added to it.",
            "",
        ]
    if fingerprint:
        lines += [
            "Device fingerprint: " + ", ".join(f"{k}={v}" for k, v in fingerprint.items() if not isinstance(v, dict)),
            "",
        ]
    lines += ["Reproduce:", "", "```", cfg.command(), "```", ""]
    lines += ["Each cell's own run (plan, pruned model, report) is under `cells/`; the numbers are in `results.csv`."]
    return "\n".join(lines) + "\n"


def write_markdown(cfg: CompareConfig, text: str) -> Path:
    path = Path(cfg.out) / "report.md"
    atomic_write_text(path, text)
    return path
