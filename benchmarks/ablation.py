"""Does aligning each scale separately help where it can act? MSA's losses on and off, paired seeds.

The image tower's upper stage trains (the UCM recipe's ``freeze_vision_stages=3``: EfficientNet-Lite2's
blocks 5-6 run on cached stage-3 maps), so MSCMA and CSMMC can shape image features, not only the
heads and the text tower. Arms (each a set of ``MSAConfig`` overrides on top of the recipe's, which
already set mean text pooling, identical texts as positives and an InfoNCE term of weight 10):

* ``infonce``: InfoNCE only, a CLIP-style fine-tune of the same towers (what a user would
  otherwise do); the reference every other arm is paired with;
* ``triplet``: the hardest-negative triplet loss only;
* ``triplet+mscma``: triplet + MSCMA (each scale aligned, no distillation);
* ``msa``: full MSA (triplet + MSCMA + CSMMC), no InfoNCE;
* ``msa+infonce``: the recipe, full MSA + InfoNCE;
* ``msa+infonce-upper`` (optional): the recipe with MSCMAT on the deepest (trained) scale only;
* ``msa+infonce-w1`` (optional): the recipe with InfoNCE at weight 1 instead of 10, so that MSA's
  losses weigh more against it.

Every run is ``training/train.py`` in its own process with the same seeds for every arm (the same
data order per seed), the same budget and the same feature cache (computed by the first run),
selected on validation and tested once. Results (validation and test mR under the published
``argsort`` tie rule, mean ± sd over seeds, each arm's paired difference from ``infonce`` with a
95 % t interval over seeds, and every run's validation curve) go to ``--output`` as JSON and a
Markdown table with the machine, date and command. Seeds run in the outer loop, so an
interrupted ablation holds whole paired sets; finished runs are reused when it starts again.

    python benchmarks/ablation.py                              # UCM-Captions, 3 seeds x 5 arms
    python benchmarks/ablation.py --arms infonce msa+infonce --seeds 0 1 2 3 4
    python benchmarks/ablation.py --corpus path/to/dataset_rsicd.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NO_INFONCE = {"contrastive_weight": 0.0}
NO_MSCMAT = {"mscma_weight": 0.0, "csmmc_weight": 0.0}
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "infonce": ("InfoNCE only (CLIP-style fine-tune)", {"triplet_weight": 0.0, **NO_MSCMAT}),
    "triplet": ("triplet only", {**NO_MSCMAT, **NO_INFONCE}),
    "triplet+mscma": ("triplet + MSCMA", {"csmmc_weight": 0.0, **NO_INFONCE}),
    "msa": ("full MSA (triplet + MSCMA + CSMMC)", NO_INFONCE),
    "msa+infonce": ("full MSA + InfoNCE (the recipe)", {}),
    "msa+infonce-upper": ("full MSA + InfoNCE, MSCMAT on the deepest (trained) scale only", {"mscmat_scales": [-1]}),
    "msa+infonce-w1": ("full MSA + InfoNCE at weight 1, so MSA's losses weigh more", {"contrastive_weight": 1.0}),
}
DEFAULT_ARMS = ["infonce", "triplet", "triplet+mscma", "msa", "msa+infonce"]
REFERENCE_ARM = "infonce"
TIE_RULE = "argsort"  # the published protocol's order, so arms compare with published tables
# The recipe's towers, cache and rates, shortened to one budget for every arm (150 steps, about 0.6
# epoch, with its own warm-up and cosine decay) so that 15 runs fit in about 80 minutes on 2 cores;
# freezing the lower text layers halves the text tower's cost. Validation every 50 steps gives each
# run's curve.
DEFAULT_BUDGET = [
    "max_steps=150",
    "freeze_vision_stages=3",
    "freeze_text_layers=3",
    "warmup_steps=15",
    "eval_every=50",
]
# What each added part does: (arm, the same arm without the part, the part), paired by seed.
CONTRASTS = [
    ("triplet+mscma", "triplet", "MSCMA added to the triplet loss"),
    ("msa", "triplet+mscma", "CSMMC added to triplet + MSCMA"),
    ("msa", "triplet", "MSCMA + CSMMC added to the triplet loss"),
    ("msa+infonce", "infonce", "MSA's three losses added to InfoNCE"),
    ("msa+infonce", "msa", "InfoNCE added to MSA"),
    ("msa+infonce-upper", "msa+infonce", "MSCMAT on the deepest scale only, instead of every scale"),
    ("msa+infonce-w1", "msa+infonce", "InfoNCE at weight 1 instead of 10 beside MSA"),
    ("msa+infonce-w1", "infonce", "MSA's losses, weighing more, added to InfoNCE"),
]
# Two-sided 95 % quantiles of Student's t by degrees of freedom (a normal approximation past 30).
T_QUANTILE_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042,
}  # fmt: skip


def arm_overrides(arm: str, base_overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``config_overrides`` of one arm: the base recipe's, then the arm's switch.

    Arms with InfoNCE keep the base's ``contrastive_weight``, so the base must set one.
    """
    overrides = {**base_overrides, **ARMS[arm][1]}
    if overrides.get("triplet_weight", 1.0) == 0 and not overrides.get("contrastive_weight"):
        raise ValueError(
            f"arm {arm!r} trains with InfoNCE alone, but the base overrides {json.dumps(base_overrides)} set no "
            "contrastive_weight > 0: give one with --base-overrides, e.g. '{\"contrastive_weight\": 10}'."
        )
    return overrides


def run_dir_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def run_arm(arm: str, seed: int, args: argparse.Namespace, base_overrides: dict[str, Any]) -> dict[str, Any]:
    output_dir = args.workdir / run_dir_name(arm, seed)
    overrides = json.dumps(arm_overrides(arm, base_overrides))
    command = [
        sys.executable,
        str(REPO / "training" / "train.py"),
        str(args.recipe),
        f"corpus={args.corpus}",
        f"seed={seed}",
        f"output_dir={output_dir}",
        f"config_overrides={overrides}",
        "overwrite_output_dir=true",
        "report_to=none",
        "progress=false",
        *args.budget,
    ]
    started = time.monotonic()
    reused = finished_run(output_dir, command)
    if not reused:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"arm {arm} seed {seed} failed ({shlex.join(command)}):\n{result.stderr[-3000:]}")
    test = json.loads((output_dir / "test_metrics.json").read_text())
    best = json.loads((output_dir / "best" / "metrics.json").read_text())
    curve = validation_curve(output_dir / "metrics.jsonl")
    best_record = next((point for point in curve if point["step"] == best.get("step")), None)
    return {
        "arm": arm,
        "seed": seed,
        "validation": best["validation"],
        "validation_argsort": best_record["argsort_mr"] if best_record else None,
        "test": test["test"],
        "test_argsort": test.get(f"test_{TIE_RULE}_ties"),
        "best_epoch": best["epoch"],
        "best_step": best.get("step"),
        "curve": curve,
        "seconds": None if reused else time.monotonic() - started,
        "reused": reused,
    }


def validation_curve(metrics_jsonl: Path) -> list[dict[str, float]]:
    """Validation mR at every evaluation of a run (ties against the model, and the ``argsort`` rule)."""
    curve = []
    for line in metrics_jsonl.read_text().splitlines():
        record = json.loads(line)
        if record.get("split") != "validation":
            continue
        by_rule = record.get("metrics_by_tie_rule", {})
        curve.append(
            {
                "step": record["step"],
                "mr": record["metrics"]["mr"],
                "argsort_mr": by_rule.get(TIE_RULE, {}).get("mr"),
            }
        )
    return curve


def finished_run(output_dir: Path, command: list[str]) -> bool:
    """Whether ``output_dir`` holds a finished run of exactly ``command`` (so an interrupted
    ablation resumes instead of training its finished arms again).

    A run writes ``test_metrics.json``, with its command line, only once it has ended; a run that
    starts again over the folder (``overwrite_output_dir``) clears it first.
    """
    test_metrics = output_dir / "test_metrics.json"
    if not test_metrics.is_file() or not (output_dir / "best" / "metrics.json").is_file():
        return False
    recorded = json.loads(test_metrics.read_text()).get("command")
    return recorded == shlex.join(["python", "training/train.py", *command[2:]])


def test_mr(run: dict[str, Any]) -> float:
    """A run's test mR under the ``argsort`` rule (runs from before that rule: ties against the model)."""
    return (run["test_argsort"] or run["test"])["mr"]


def validation_mr(run: dict[str, Any]) -> float:
    return run["validation_argsort"] if run["validation_argsort"] is not None else run["validation"]["mr"]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_difference(values: list[float], reference: list[float]) -> dict[str, float]:
    """Mean of ``values[s] - reference[s]`` over seeds with its 95 % t interval (NaN width for one seed)."""
    differences = [a - b for a, b in zip(values, reference, strict=True)]
    mean, sd = mean_sd(differences)
    n = len(differences)
    half = T_QUANTILE_975.get(n - 1, 1.96) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "seeds": n}


def summarise(runs: list[dict[str, Any]], reference: str = REFERENCE_ARM) -> dict[str, dict[str, Any]]:
    """Per arm: mean ± sd of validation and test mR (argsort rule) and the paired difference from ``reference``.

    Differences pair runs of the same seed, over the seeds both arms finished.
    """
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_arm.setdefault(run["arm"], {})[run["seed"]] = run
    summary = {}
    for arm, seeds in by_arm.items():
        row: dict[str, Any] = {"seeds": len(seeds), "tie_rule": TIE_RULE}
        for split, value in (("validation", validation_mr), ("test", test_mr)):
            row[f"{split}_mr_mean"], row[f"{split}_mr_std"] = mean_sd([value(run) for run in seeds.values()])
        if reference in by_arm and arm != reference:
            shared = sorted(set(seeds) & set(by_arm[reference]))
            for split, value in (("validation", validation_mr), ("test", test_mr)):
                row[f"{split}_minus_{reference}"] = paired_difference(
                    [value(seeds[seed]) for seed in shared], [value(by_arm[reference][seed]) for seed in shared]
                )
        summary[arm] = row
    return summary


def contrasts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of ``CONTRASTS`` whose two arms ran: the paired test and validation differences over their shared seeds."""
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_arm.setdefault(run["arm"], {})[run["seed"]] = run
    rows = []
    for arm, without, part in CONTRASTS:
        if arm not in by_arm or without not in by_arm:
            continue
        shared = sorted(set(by_arm[arm]) & set(by_arm[without]))
        row: dict[str, Any] = {"arm": arm, "minus": without, "part": part}
        for split, value in (("validation", validation_mr), ("test", test_mr)):
            row[split] = paired_difference(
                [value(by_arm[arm][seed]) for seed in shared], [value(by_arm[without][seed]) for seed in shared]
            )
        rows.append(row)
    return rows


def mean_curves(runs: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per arm, the mean over seeds of validation mR (argsort rule) at each evaluated step."""
    points: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        for point in run["curve"]:
            value = point["argsort_mr"] if point["argsort_mr"] is not None else point["mr"]
            points.setdefault(run["arm"], {}).setdefault(point["step"], []).append(value)
    return {arm: [(step, statistics.fmean(v)) for step, v in sorted(steps.items())] for arm, steps in points.items()}


def _interval(difference: dict[str, float] | None) -> str:
    if not difference:
        return "reference"
    if math.isnan(difference["ci95_low"]):
        return f"{difference['mean']:+.2f} (one seed)"
    return f"{difference['mean']:+.2f} [{difference['ci95_low']:+.2f}, {difference['ci95_high']:+.2f}]"


def reused_note(runs: list[dict[str, Any]]) -> str:
    """Why a summary's wall time can undercount: runs finished by an earlier invocation are not timed again."""
    reused = sum(run.get("reused", False) for run in runs)
    return f" ({reused} of {len(runs)} runs finished by an earlier invocation, not included)" if reused else ""


def markdown(summary: dict[str, dict[str, Any]], runs: list[dict[str, Any]], header: dict[str, Any]) -> str:
    reference = header["reference_arm"]
    lines = [
        f"# Ablation of MSA's losses on {header['corpus']}",
        "",
        f"- Command: `{header['command']}`",
        f"- Date: {header['date']}; machine: {header['machine']}; wall time {header['minutes']:.1f} min"
        + reused_note(runs),
        f"- Base recipe: `{header['recipe']}` with `{' '.join(header['budget'])}`; seeds {header['seeds']} (paired)",
        f"- Every arm's MSAConfig overrides start from `{json.dumps(header['base_overrides'])}`",
        f"- mR under the `{TIE_RULE}` tie rule (the published protocol's order); differences are paired by seed "
        f"against `{reference}`, with a 95 % t interval over seeds",
        "",
        f"| arm | what | validation mR | test mR | test − {reference} [95 % CI] | validation − {reference} | "
        "per seed (test) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, row in summary.items():
        per_seed = ", ".join(f"{test_mr(run):.2f}" for run in runs if run["arm"] == arm)
        lines.append(
            f"| {arm} | {ARMS[arm][0]} | {row['validation_mr_mean']:.2f} ± {row['validation_mr_std']:.2f} | "
            f"{row['test_mr_mean']:.2f} ± {row['test_mr_std']:.2f} | {_interval(row.get(f'test_minus_{reference}'))} | "
            f"{_interval(row.get(f'validation_minus_{reference}'))} | {per_seed} |"
        )
    lines += [
        "",
        "What each part adds (paired by seed; mean difference in mR [95 % CI]):",
        "",
        "| part | arms | test | validation |",
        "|---|---|---|---|",
    ]
    for row in contrasts(runs):
        lines.append(
            f"| {row['part']} | {row['arm']} − {row['minus']} | {_interval(row['test'])} | {_interval(row['validation'])} |"
        )
    curves = mean_curves(runs)
    steps = sorted({step for curve in curves.values() for step, _ in curve})
    lines += [
        "",
        "Validation mR (argsort rule, mean over seeds) at each evaluation, to show whether the arms converged:",
        "",
        "| arm | " + " | ".join(f"step {step}" for step in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for arm, curve in curves.items():
        values = dict(curve)
        lines.append(f"| {arm} | " + " | ".join(f"{values[s]:.2f}" if s in values else "" for s in steps) + " |")
    return "\n".join(lines) + "\n"


def repository_relative(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside or beside it, so results name no machine's folders."""
    resolved = Path(path).resolve()
    for root, prefix in ((REPO, ""), (REPO.parent, "../")):
        if resolved.is_relative_to(root):
            return prefix + str(resolved.relative_to(root))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "training" / "configs" / "ucm_captions.yaml")
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "data" / "ucm-captions" / "dataset_ucm.json"))
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS), help="which arms to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", nargs="*", default=DEFAULT_BUDGET, help="recipe overrides applied to every arm")
    parser.add_argument(
        "--base-overrides",
        type=json.loads,
        default=None,
        help="MSAConfig overrides (JSON) every arm starts from; default: the recipe's",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "ablation-v2")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "ablation-v2-ucm")
    args = parser.parse_args(argv)
    if not Path(args.corpus).exists():
        print(f"ablation.py: error: corpus {args.corpus} does not exist (give --corpus)", file=sys.stderr)
        return 2
    if any(override.startswith("config_overrides") for override in args.budget):
        print("ablation.py: error: --budget may not set config_overrides (use --base-overrides)", file=sys.stderr)
        return 2
    if args.base_overrides is None:
        sys.path.insert(0, str(REPO / "src"))
        from msa_hf_train.recipe import load_recipe

        base_overrides = load_recipe(args.recipe).config_overrides
    else:
        base_overrides = args.base_overrides
    started = time.monotonic()
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            runs.append(run_arm(arm, seed, args, base_overrides))
            took = "finished earlier, reused" if runs[-1]["reused"] else f"{runs[-1]['seconds'] / 60:.1f} min"
            print(
                f"arm {arm} seed {seed}: validation mR {validation_mr(runs[-1]):.2f}, "
                f"test mR {test_mr(runs[-1]):.2f} ({TIE_RULE} rule; {took})",
                flush=True,
            )
            write_results(runs, args, base_overrides, started, argv)
    return 0


def write_results(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    base_overrides: dict[str, Any],
    started: float,
    argv: list[str] | None,
) -> None:
    """Write the JSON and Markdown results of the runs so far (after every run, so a stopped ablation keeps them)."""
    summary = summarise(runs)
    header = {
        "corpus": repository_relative(args.corpus),
        "recipe": repository_relative(args.recipe),
        "budget": args.budget,
        "base_overrides": base_overrides,
        "seeds": args.seeds,
        "arms": args.arms,
        "reference_arm": REFERENCE_ARM,
        "tie_rule": TIE_RULE,
        "command": shlex.join(["python", "benchmarks/ablation.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}, {os.cpu_count()} CPU cores",
        "minutes": (time.monotonic() - started) / 60,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(
        json.dumps({**header, "summary": summary, "contrasts": contrasts(runs), "runs": runs}, indent=2) + "\n"
    )
    table = markdown(summary, runs, header)
    args.output.with_suffix(".md").write_text(table)
    print(table, flush=True)


if __name__ == "__main__":
    sys.exit(main())
