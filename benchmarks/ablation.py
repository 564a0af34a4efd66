"""Does aligning each scale separately help? MSA's losses switched on and off, same towers, budget and seeds.

Arms (each a set of ``MSAConfig`` overrides on top of the base recipe):

* ``a`` triplet loss only: MSCMA and CSMMC weights 0, MSCMAT not run at all;
* ``b`` triplet + MSCMA (no cross-scale distillation);
* ``c`` full MSA (triplet + MSCMA + CSMMC);
* ``d`` full MSA with padding tokens masked in MSCMAT;
* ``e`` full MSA with other captions of the same image not counted as negatives;
* ``f`` full MSA with only the deepest scale in MSCMAT (so no distillation either).

Every arm starts from the recipe's ``config_overrides`` (for ``ucm_captions.yaml`` its departures:
identical texts as positives, mean pooling, an InfoNCE term) and switches MSA's parts on and off
on top; ``--base-overrides '{}'`` starts from the paper's MSA instead.
Every run is ``training/train.py`` in its own process, selected on validation and tested once.
The frozen image tower's features are cached by the first run and shared by all the others.
Results (mean and spread over seeds of validation and test mR) go to ``--output`` as JSON and a
Markdown table, with the machine, date and command.

    python benchmarks/ablation.py                                   # UCM-Captions, 2 seeds, ~90 min on 2 cores
    python benchmarks/ablation.py --corpus path/to/dataset_rsicd.json --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
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
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "a": ("triplet only", {"mscma_weight": 0.0, "csmmc_weight": 0.0}),
    "b": ("triplet + MSCMA", {"csmmc_weight": 0.0}),
    "c": ("full MSA (triplet + MSCMA + CSMMC)", {}),
    "d": ("full MSA, padding masked in MSCMAT", {"mscmat_mask_padding": True}),
    "e": ("full MSA, same-image captions not negatives", {"same_image_positives": True}),
    "f": ("full MSA, deepest scale only in MSCMAT", {"mscmat_scales": [-1]}),
}
# A smaller per-arm budget than the recipe's, the same for every arm, so that 12 runs fit in well
# under an hour on 2 cores; the image tower stays frozen, so its features are cached once for all of them.
DEFAULT_BUDGET = [
    "max_steps=300",
    "freeze_vision_stages=all",
    "freeze_text_layers=3",
    "warmup_steps=30",
    "eval_every=150",
]


def arm_overrides(arm: str, base_overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``config_overrides`` of one arm: the base recipe's, then the arm's switch."""
    return {**base_overrides, **ARMS[arm][1]}


def run_arm(arm: str, seed: int, args: argparse.Namespace, base_overrides: dict[str, Any]) -> dict[str, Any]:
    output_dir = args.workdir / f"{arm}-seed{seed}"
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
    return {
        "arm": arm,
        "seed": seed,
        "validation": best["validation"],
        "test": test["test"],
        "best_epoch": best["epoch"],
        "seconds": None if reused else time.monotonic() - started,
        "reused": reused,
    }


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


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        mine = [run for run in runs if run["arm"] == arm]
        row = {}
        for split in ("validation", "test"):
            values = [run[split]["mr"] for run in mine]
            row[f"{split}_mr_mean"] = statistics.fmean(values)
            row[f"{split}_mr_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["seeds"] = len(mine)
        summary[arm] = row
    return summary


def markdown(summary: dict[str, dict[str, float]], runs: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"# Ablation of MSA's losses on {header['corpus']}",
        "",
        f"- Command: `{header['command']}`",
        f"- Date: {header['date']}; machine: {header['machine']}; wall time {header['minutes']:.1f} min",
        f"- Base recipe: `{header['recipe']}` with {' '.join(header['budget'])}; seeds {header['seeds']}",
        f"- Every arm's MSAConfig overrides start from `{json.dumps(header['base_overrides'])}` ({{}} = the paper's MSA)",
        "",
        "| arm | what | validation mR (mean ± sd) | test mR (mean ± sd) | per seed (test) |",
        "|---|---|---|---|---|",
    ]
    for arm, row in summary.items():
        per_seed = ", ".join(f"{run['test']['mr']:.2f}" for run in runs if run["arm"] == arm)
        lines.append(
            f"| {arm} | {ARMS[arm][0]} | {row['validation_mr_mean']:.2f} ± {row['validation_mr_std']:.2f} | "
            f"{row['test_mr_mean']:.2f} ± {row['test_mr_std']:.2f} | {per_seed} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "training" / "configs" / "ucm_captions.yaml")
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "data" / "ucm-captions" / "dataset_ucm.json"))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="which arms to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budget", nargs="*", default=DEFAULT_BUDGET, help="recipe overrides applied to every arm")
    parser.add_argument(
        "--base-overrides",
        type=json.loads,
        default=None,
        help="MSAConfig overrides (JSON) every arm starts from; default: the recipe's; '{}': the paper's MSA",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "ablation")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "ablation-ucm")
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
                f"arm {arm} seed {seed}: validation mR {runs[-1]['validation']['mr']:.2f}, "
                f"test mR {runs[-1]['test']['mr']:.2f} ({took})",
                flush=True,
            )
    summary = summarise(runs)
    header = {
        "corpus": args.corpus,
        "recipe": str(args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe),
        "budget": args.budget,
        "base_overrides": base_overrides,
        "seeds": args.seeds,
        "command": shlex.join(["python", "benchmarks/ablation.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}, {os.cpu_count()} CPU cores",
        "minutes": (time.monotonic() - started) / 60,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(
        json.dumps({**header, "summary": summary, "runs": runs}, indent=2) + "\n"
    )
    table = markdown(summary, runs, header)
    args.output.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
