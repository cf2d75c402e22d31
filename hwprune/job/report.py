"""Run reports: ``report.json`` for machines and ``report.md`` for people, from the same dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwprune.io import atomic_write_text, write_json

REPORT_KIND = "prune-report"
REPORT_SCHEMA = 1


def _ms(m: dict[str, Any] | None) -> str:
    return "-" if not m else f"{m['summary']['median_ms']:.3f} (IQR {m['summary']['iqr_ms']:.3f})"


def _factor_range(rounds: list[dict[str, Any]]) -> str:
    """The span of the off-grid factors densify left (older runs recorded none: 1.00)."""
    last: dict[str, float] = {}
    for r in rounds:
        last |= r.get("off_grid_factors", {})
    values = sorted(last.values()) or [1.0]
    return f"{values[0]:.2f}" if values[0] == values[-1] else f"{values[0]:.2f}-{values[-1]:.2f}"


def _num(x: float | int | None, fmt: str = ",") -> str:
    return "-" if x is None else format(x, fmt)


def percent_used(measured_ms: float, budget_ms: float) -> int:
    """The share of a budget a model used, in whole percent, truncated rather than rounded: a plan
    kept for its slack (under 90 % of the budget) must not read "90%"."""
    return int(100 * measured_ms / budget_ms)


def _quality_row(base: dict[str, Any], pruned: dict[str, Any]) -> str:
    """Test accuracy on the built-in dataset's test split, or the user's own score (Python API runs)."""
    if base.get("test_accuracy") is None and "score" in base:
        return f"| score (yours) | {_num(base['score'], '.4f')} | {_num(pruned['score'], '.4f')} |"
    return f"| test accuracy | {_num(base['test_accuracy'], '.4f')} | {_num(pruned['test_accuracy'], '.4f')} |"


def _predicted_from(report: dict[str, Any]) -> str:
    """Where the predicted figure comes from: a FLOPs-targeted twin's search never saw the table."""
    predictor = (report.get("search") or {}).get("predictor") or {}
    if predictor.get("name") == "flops":
        return "the predicted value is the plan's share of the unpruned MACs, scaled to ms (a FLOPs-targeted search)"
    return "the predicted value comes from the latency table"


def render_markdown(report: dict[str, Any]) -> str:
    lines = _header(report) + _results_table(report)
    if report.get("search"):
        lines += _search_section(report)
    criterion = report.get("criterion")
    if criterion:
        taylor = f", over {report['taylor_batches']} training minibatches" if report.get("taylor_batches") else ""
        lines += [f"Filters kept in each group: the highest-scoring by criterion `{criterion}`{taylor}.", ""]
    fp = report.get("fingerprint", {})
    if fp:
        lines += ["Device fingerprint: " + ", ".join(f"{k}={v}" for k, v in fp.items() if not isinstance(v, dict)), ""]
    lines += [f"Artifacts: `{report['artifacts']['model']}` (pruned model), `{report['artifacts']['plan']}` (plan)."]
    return "\n".join(lines) + "\n"


def threads_phrase(n: int | None) -> str:
    """The thread count as a report sentence says it: none pinned means the runtime's default, all of them."""
    return "all threads" if not n else f"{n} thread" + ("" if n == 1 else "s")


def _header(report: dict[str, Any]) -> list[str]:
    """The title, the deployment setting and, for a budgeted run, the budget and its verdict."""
    base, pruned, setting = report["unpruned"], report["pruned"], report["deployment"]
    lines = [
        f"# hwprune report: {report['model']['name']} on {setting['backend']}",
        "",
        f"Deployment: backend `{setting['backend']}`, batch {setting['batch']}, input "
        f"{setting['input_shape']}, {threads_phrase(setting.get('threads'))}. Latency is the measured median "
        f"(ms per batch) with its IQR; {_predicted_from(report)}.",
        "",
    ]
    budget = report.get("budget")
    if not budget:
        return lines
    met = report["budget_met"]
    line = (
        f"Budget: **{budget['ms']:.3f} ms** (`{budget['text']}`), {'met' if met else 'NOT met'}: measured "
        f"{pruned['measured']['summary']['median_ms']:.3f} ms {'<=' if met else '>'} {budget['ms']:.3f} ms"
    )
    if budget.get("fraction") is not None:
        line += (
            f". A relative budget is judged against the unpruned model measured alongside the pruned one "
            f"({base['measured']['summary']['median_ms']:.3f} ms now, {budget['ms_at_start']:.3f} ms of budget "
            "at the start of the run)"
        )
    return lines + [line + ".", ""]


def _results_table(report: dict[str, Any]) -> list[str]:
    base, pruned = report["unpruned"], report["pruned"]
    speedup = base["measured"]["summary"]["median_ms"] / pruned["measured"]["summary"]["median_ms"]
    return [
        "| | unpruned | pruned |",
        "|---|---|---|",
        f"| measured latency, ms | {_ms(base['measured'])} | {_ms(pruned['measured'])} |",
        f"| predicted latency, ms | {_num(base.get('predicted_ms'), '.3f')} "
        f"| {_num(pruned.get('predicted_ms'), '.3f')} |",
        f"| measured speed-up | 1.00x | {speedup:.2f}x |",
        _quality_row(base, pruned),
        f"| parameters | {_num(base['params'])} | {_num(pruned['params'])} |",
        f"| MACs per sample | {_num(base['macs'])} | {_num(pruned['macs'])} |",
        "",
    ]


def _taught(report: dict[str, Any]) -> str:
    weight = report["finetune"].get("distill")
    return f", distilled from the unpruned model (weight {weight:g})" if weight else ""


def _search_section(report: dict[str, Any]) -> list[str]:
    """What the search cost, the widths it timed on the way, and each try when there was more than one."""
    search = report["search"]
    cost = search["cost"]
    rounds = [r for t in search["tries"] for r in t.get("densified", [])]
    tries, again = len(search["tries"]), sum(r["searched_again"] for r in rounds)
    steps = len(search["tries"][search.get("taken_try", tries) - 1].get("lineage", []))
    start = (
        f", from the model the search reached ({steps} pruning steps, each short-term fine-tuned)"
        if steps
        else ", from the original weights"
    )
    lines = [
        f"Search: agent `{search['agent']}`, {tries} {'try' if tries == 1 else 'tries'} "
        f"({tries + again} searches), "
        f"{cost.get('wall_s', 0):.1f} s, {cost.get('evaluations', 0)} evaluations, "
        f"{cost.get('finetune_steps', 0)} short fine-tune steps. Fine-tune after pruning: "
        f"{report['finetune']['steps']} steps{start}{_taught(report)}."
        + (
            " Fine-tunes and candidate scores ran in bf16 mixed precision (fp32 weights; the model timed "
            "and tested is fp32)."
            if report["finetune"].get("precision") == "bf16"
            else ""
        )
        + (
            f" The search continued the path of `{search['continued_from']}` (`--continue-from`): its cost is "
            "what this run added to that path."
            if search.get("continued_from")
            else ""
        ),
        "",
    ]
    if rounds:
        repeated = {0: "no search was", 1: "1 search was"}.get(again, f"{again} searches were")
        later = (
            " A later search read the still-unmeasured widths of each layer kind scaled by how far "
            f"the measured ones sat from the table (after the last round: x{_factor_range(rounds)})."
        )
        lines += [
            f"Before each plan was measured, the layer widths it chose that the table had not measured were "
            f"timed into the run's copy of the table ({sum(len(r['points']) for r in rounds)} widths); "
            f"{repeated} repeated because the plan's prediction moved off its target (over it, or more than "
            "the margin under it)." + (later if tries + again > 1 else ""),
            "",
        ]
    return lines + (_tries_section(search) if tries > 1 else [])


def _tries_section(search: dict[str, Any]) -> list[str]:
    """A table of the tries, why each later one searched again, and which try's plan was taken."""
    tries = search["tries"]
    lines = ["| try | search target, ms | predicted, ms | measured, ms | budget, ms |", "|---" * 5 + "|"]
    for i, t in enumerate(tries):
        measured = f"{t['measured']['summary']['median_ms']:.3f}"
        budget_ms = _num(t.get("budget_ms"), ".3f")
        if t.get("final"):  # accepted, then missed after its fine-tune
            measured += f"; fine-tuned {t['final']['measured']['summary']['median_ms']:.3f}"
            budget_ms += f"; {t['final']['budget_ms']:.3f}"
        lines.append(f"| {i + 1} | {t['target_ms']:.3f} | {t['predicted_ms']:.3f} | {measured} | {budget_ms} |")
    lines.append("")
    for i, t in enumerate(tries):
        if t.get("slack_used"):
            used = percent_used(t["measured"]["summary"]["median_ms"], t["budget_ms"])
            lines += [
                f"Try {i + 1}'s plan used {used}% of the budget, so it was kept and try {i + 2} "
                "searched for a wider one against a looser target.",
                "",
            ]
        if t.get("searched_between"):
            lines += [
                f"Try {i + 1}'s wider plan was not under the budget by half the margin, so try "
                f"{i + 2} searched between it and the kept plan.",
                "",
            ]
    taken = search.get("taken_try", len(tries))
    if taken != len(tries):
        if "same_plan_as" in tries[-1]:
            why = "The looser target found the same plan again"
        elif "final" in tries[-1]:
            why = "The wider plan's fine-tuned model measured over the budget on the last try"
        else:
            why = "The wider plan was not under the budget by half the margin"
        lines += [f"{why}, so try {taken}'s plan is the one fine-tuned and reported.", ""]
    return lines


def write_report(run_dir: str | Path, report: dict[str, Any]) -> Path:
    run_dir = Path(run_dir)
    write_json(run_dir / "report.json", {"kind": REPORT_KIND, "schema_version": REPORT_SCHEMA} | report)
    atomic_write_text(run_dir / "report.md", render_markdown(report))
    return run_dir / "report.md"
