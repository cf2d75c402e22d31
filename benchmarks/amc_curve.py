"""Does the AMC agent learn? One search's reward curve, as a PNG and JSON.

Runs one AMC search on a shipped checkpoint against a fraction of the latency table's predicted
unpruned latency, with the evaluator of the budget benchmark (10 fine-tune steps, 1000 validation
samples), and plots per episode: the reward, the best so far, and the mean of the last ``--window``
episodes; the final policy's deterministic episode is marked beside the best random warm-up episode,
and the uniform plan at the same target is scored by the same evaluator for scale. The JSON holds
the same numbers. The search state lives in --out-dir, so an interrupted run continues.

    python benchmarks/amc_curve.py --model resnet20 --budget 0.5 --out docs/amc_curve_resnet20.png

``--macs-proxy`` prices plans by their MACs instead of a profiled table (no device timing): for
trying the script in seconds, not for figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, load_average, run  # noqa: E402

from hwprune.agents import SearchContext, get_agent  # noqa: E402
from hwprune.agents.uniform import UniformAgent  # noqa: E402
from hwprune.checkpoint import load_checkpoint  # noqa: E402
from hwprune.data import load_data  # noqa: E402
from hwprune.errors import ConfigError  # noqa: E402
from hwprune.evaluator import Evaluator  # noqa: E402
from hwprune.latency import LatencyTable, Predictor  # noqa: E402
from hwprune.latency.predictor import FlopsPredictor  # noqa: E402
from hwprune.pruning import ModelGraph  # noqa: E402
from hwprune.train import resolve_precision  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def curve(history: list[dict], window: int) -> dict:
    """Per episode: reward, best so far, trailing mean; the final policy's episode and the best warm-up one."""
    rows = [r for r in history if "episode" in r]
    rewards = [r["reward"] for r in rows]
    best, mean = [], []
    for i in range(len(rewards)):
        best.append(max(rewards[: i + 1]))
        mean.append(statistics.fmean(rewards[max(0, i + 1 - window) : i + 1]))
    warm = [r for r in rows if r["phase"] == "warmup"]
    final = next((r for r in rows if r["phase"] == "final"), None)
    top_warm = max(warm, key=lambda r: r["reward"]) if warm else None

    def brief(r: dict | None) -> dict | None:
        keys = ("episode", "phase", "reward", "accuracy", "predicted_ms", "keep")
        return {k: r[k] for k in keys} if r else None

    return {
        "episodes": [r["episode"] for r in rows],
        "phase": [r["phase"] for r in rows],
        "reward": rewards,
        "best": best,
        "mean": mean,
        "final_policy": brief(final),
        "best_warmup": brief(top_warm),
        "best_overall": brief(max(rows, key=lambda r: r["reward"])),
    }


def plot(data: dict, out: Path, title: str, uniform: float | None) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError('the plot needs matplotlib: pip install "hwprune[plots]"') from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    colour = {"warmup": "tab:gray", "policy": "tab:blue", "final": "tab:red"}
    for phase in ("warmup", "policy"):
        xs = [e for e, p in zip(data["episodes"], data["phase"], strict=True) if p == phase]
        ys = [r for r, p in zip(data["reward"], data["phase"], strict=True) if p == phase]
        ax.scatter(xs, ys, s=9, color=colour[phase], alpha=0.6, label=f"episode reward ({phase})")
    ax.plot(data["episodes"], data["best"], color="tab:green", label="best so far")
    ax.plot(data["episodes"], data["mean"], color="tab:orange", label="mean of the last episodes")
    if data["best_warmup"]:
        w = data["best_warmup"]
        ax.scatter([w["episode"]], [w["reward"]], marker="s", s=50, color="black", label="best random warm-up")
    if data["final_policy"]:
        f = data["final_policy"]
        ax.scatter([f["episode"]], [f["reward"]], marker="*", s=140, color=colour["final"], label="final policy")
    if uniform is not None:
        ax.axhline(uniform, color="tab:purple", linestyle="--", linewidth=1, label="uniform plan")
    ax.set_xlabel("episode")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", help="a shipped checkpoint: checkpoints/MODEL-fmnist")
    p.add_argument("--checkpoint", help="another checkpoint directory (overrides --model; give --lut with it)")
    p.add_argument("--budget", type=float, default=0.5, help="target: this fraction of the predicted unpruned latency")
    p.add_argument(
        "--lut",
        help="latency table of the model, e.g. runs/bench-budget/resnet20/lut.json of the budget benchmark "
        "(default: profiled into --out-dir as that benchmark profiles it)",
    )
    p.add_argument("--macs-proxy", action="store_true", help="price plans by MACs, no table (a quick try only)")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--search-finetune-steps", type=int, default=10)
    p.add_argument("--val-samples", type=int, default=1000)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amc-option", action="append", default=[], metavar="KEY=VALUE", help="e.g. episodes=100")
    p.add_argument("--window", type=int, default=10, help="episodes in the trailing mean")
    p.add_argument("--out-dir", default="runs/bench-amc-curve")
    p.add_argument("--out", help="PNG path (default: OUT_DIR/amc_curve_MODEL_BUDGETx.png; the JSON beside it)")
    args = p.parse_args()
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.amc_option)} | {"progress": True}

    start = time.perf_counter()
    checkpoint = Path(args.checkpoint) if args.checkpoint else ROOT / "checkpoints" / f"{args.model}-fmnist"
    model, spec, meta = load_checkpoint(checkpoint)
    data = load_data(str(meta.get("data", "fashion-mnist")), seed=int(meta.get("seed", 0)))
    graph = ModelGraph(model, (spec.in_channels, *spec.input_size))
    out_dir = Path(args.out_dir) / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.macs_proxy:
        predictor = FlopsPredictor(graph, full_ms=1.0)
    else:
        lut = Path(args.lut) if args.lut else None
        if lut is None:
            from budget_adherence import table_for

            lut = table_for(spec.name, args)
        predictor = Predictor(LatencyTable.load(lut, allow_foreign=True), graph)
    precision = resolve_precision(args.precision)
    evaluator = Evaluator(
        model,
        graph,
        data,
        finetune_steps=args.search_finetune_steps,
        seed=args.seed,
        val_samples=args.val_samples,
        precision=precision,
    )
    ctx = SearchContext(spec.name, model, graph, predictor, evaluator, seed=args.seed)
    budget_ms = args.budget * ctx.predict_ms(ctx.full_plan())
    agent = get_agent("amc", **options)
    result = agent.search(ctx, budget_ms, out_dir / f"amc-{args.budget}x-seed{args.seed}.json")
    uniform = UniformAgent().search(ctx, budget_ms).plan
    uniform_acc = ctx.evaluate(uniform)
    uniform_reward = uniform_acc if agent.options()["reward"] == "accuracy" else None

    data_out = curve(result.history, args.window)
    png = Path(args.out) if args.out else out_dir / f"amc_curve_{spec.name}_{args.budget}x.png"
    title = f"AMC on {spec.name}, {args.budget}x predicted latency ({len(data_out['episodes'])} episodes)"
    plot(data_out, png, title, uniform_reward)
    summary = {
        "benchmark": "amc_curve",
        "command": "python " + " ".join(sys.argv),
        "setting": {
            "model": spec.name,
            "budget": args.budget,
            "budget_ms": budget_ms,
            "predictor": "macs-proxy" if args.macs_proxy else "latency table",
            "search_finetune_steps": args.search_finetune_steps,
            "val_samples": args.val_samples,
            "precision": precision,
            "seed": args.seed,
            "options": agent.options(),
        },
        "best_plan": {"keep": result.plan.keep, "predicted_ms": result.predicted_ms},
        "uniform": {"keep": uniform.keep, "predicted_ms": ctx.predict_ms(uniform), "accuracy": uniform_acc},
        "curve": data_out,
        "cost": result.cost,
        "png": str(png),
        "wall_s": round(time.perf_counter() - start, 1),
        "load_average": load_average(),
    }
    png.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    emit({k: v for k, v in summary.items() if k != "curve"} | {"final_policy": data_out["final_policy"]})


if __name__ == "__main__":
    run(main, "the search state stays in --out-dir: run the same command to continue")
