#!/usr/bin/env python
"""Start-up time: ``import torch``, ``import msa_hf`` and every command's ``--help``, in one run.

Each case runs in a fresh interpreter, interleaved with the others ``--repeats`` times (so a
change in the machine's load hits every case alike); the median wall time and the peak memory
(resident-set high-water mark of the child) are reported, with each case's ratio to
``import torch``. The target of the README: every ``--help`` within half of ``import torch``.

Usage::

    python benchmarks/startup.py                                   # prints the table
    python benchmarks/startup.py --out benchmarks/results/startup  # also results.json / results.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.5  # each --help at most this fraction of `import torch`


def commands() -> dict[str, str]:
    """The console scripts of pyproject.toml: name -> ``module:function``."""
    section = (REPO / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    return dict(re.findall(r'^(msa-[\w-]+) = "([\w.:]+)"$', section, flags=re.M))


def cases() -> dict[str, str]:
    out = {"import torch": "import torch", "import msa_hf": "import msa_hf"}
    for name, target in commands().items():
        module, function = target.split(":")
        # What the console-script stub runs, with --help.
        out[f"{name} --help"] = (
            f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {function}; {function}()"
        )
    return out


def run_once(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB, from wait4's rusage) of a fresh interpreter running ``code``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"startup.py: error: {code!r} exited {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each case, interleaved (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    todo = cases()
    walls: dict[str, list[float]] = {name: [] for name in todo}
    peaks: dict[str, float] = {name: 0.0 for name in todo}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, code in todo.items():
            wall, peak = run_once(code, env)
            walls[name].append(wall)
            peaks[name] = max(peaks[name], peak)
    torch_s = statistics.median(walls["import torch"])
    rows = []
    for name in todo:
        median = statistics.median(walls[name])
        rows.append({"case": name, "median_s": median, "ratio_to_torch": median / torch_s, "peak_mib": peaks[name]})
    helps = [r for r in rows if r["case"].endswith("--help")]
    report = {
        "command": " ".join(["python", "benchmarks/startup.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "omp_num_threads": env["OMP_NUM_THREADS"],
        "repeats": args.repeats,
        "target": f"every --help <= {TARGET} x import torch",
        "target_met": all(r["ratio_to_torch"] <= TARGET for r in helps),
        "results": rows,
    }
    table = format_table(rows)
    print(table)
    print(f"target ({report['target']}): {'met' if report['target_met'] else 'NOT met'}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "results.md").write_text(
            f"Start-up, {report['date']}, {report['machine']}, load average {report['load_average_before_after']} "
            f"(before, after), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, median of {args.repeats} interleaved runs:\n\n"
            + table
            + "\n"
        )
    return 0 if report["target_met"] else 1


def format_table(rows: list[dict]) -> str:
    lines = ["| case | median wall s | × import torch | peak MiB |", "|---|---|---|---|"]
    lines += [
        f"| `{r['case']}` | {r['median_s']:.2f} | {r['ratio_to_torch']:.2f} | {r['peak_mib']:.0f} |" for r in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
