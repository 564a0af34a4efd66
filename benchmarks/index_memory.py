#!/usr/bin/env python
"""A search process's memory with a memory-mapped index: eager load vs ``ImageIndex.load``.

**Index.** ``N`` random L2-normalised 384-d float32 vectors (``--n``, default 1,000,000)
written as an index folder by the functions ``msa-index build`` uses
(:func:`~msa_hf.retrieval.index_build.commit_index`: ``embeddings.safetensors``, then
``manifest.json`` with one record per file: path, size, mtime, ctime, SHA-256; the files are
fake and never read), plus an approximate index made by the ``msa-index ann`` code path
(:func:`~msa_hf.retrieval.index_build.rebuild_ann`, ``--factory``, default ``IVF1024,SQ8``).
Uniform random vectors have no neighbourhoods, so the build's recall means nothing here: this
benchmark measures memory and load time, not search quality (that is ``index_scale.py``). The
folder (``--index-dir``) is reused by a later run with the same ``--n`` and ``--factory``.

**Steps.** Each runs in a fresh subprocess, which reports its peak resident memory (``VmHWM``:
``ru_maxrss`` without the parent's high-water mark that a child inherits across ``exec``) and,
at its end, its resident memory split into anonymous memory (the process's own allocations)
and file pages (``RssFile``: mapped file pages it touched, shared with the page cache and
reclaimable):

* ``imports``: ``torch``, ``faiss`` and ``msa_hf.retrieval.index`` only (every step's floor).
* ``manifest``: the imports plus ``json.loads`` of ``manifest.json`` (its file list is part of
  every load).
* ``eager``: the load before the memory map, rebuilt here as a reference: the manifest, the
  checksum, ``safetensors.torch.load_file`` and ``torch.isfinite(embeddings).all(dim=1)`` over
  the whole matrix, then one exact query as one ``Q x N`` product and sort.
* ``ann``: ``ImageIndex.load`` and one query of the approximate index (its first query reads
  ``ann.faiss``).
* ``exact``: ``ImageIndex.load`` and one exact query (``backend="torch"``, block by block).
* ``exact_faiss``: ``ImageIndex.load`` and one exact query with ``backend="faiss"``.

Every step searches the same seeded query; the exact steps must return the same rows. Run it
single-threaded on a shared machine and say so::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 python benchmarks/index_memory.py
    python benchmarks/index_memory.py --n 100000 --factory IVF256,SQ8   # a quick look

Results go to ``--out`` (``.json`` and ``.md``, default ``benchmarks/results/index_memory``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from run_info import git_commit

DIM = 384
K = 10
MIB = 1024**2
STEPS = ("imports", "manifest", "eager", "ann", "exact", "exact_faiss")


# ----------------------------------------------------------------------------- the index


def build(folder: Path, n: int, factory: str, seed: int) -> dict[str, Any]:
    """Write the index folder with msa-index's own writers (or reuse one of the same settings)."""
    import torch

    from msa_hf.retrieval.index_ann import AnnSettings
    from msa_hf.retrieval.index_build import BuildPlan, FolderScan, commit_index, rebuild_ann

    stamp = folder.with_name(folder.name + ".settings.json")  # what the folder was built with
    settings = {"n": n, "dim": DIM, "factory": factory, "seed": seed}
    if (folder / "manifest.json").is_file() and stamp.is_file():
        made = json.loads(stamp.read_text())
        if made["settings"] == settings:
            return {"reused": str(folder), **made["build"]}
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vectors = torch.empty((n, DIM), dtype=torch.float32)
    for first in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - first), DIM), dtype=np.float32)
        vectors[first : first + len(block)] = torch.from_numpy(block / np.linalg.norm(block, axis=1, keepdims=True))
    now = time.time_ns()
    records = [
        {
            "path": f"scenes/{i // 1000:04d}/img_{i:07d}.jpg",
            "size": 150_000 + i % 50_000,
            "mtime_ns": now,
            "ctime_ns": now,
        }
        for i in range(n)
    ]
    encoded = {r["path"]: (hashlib.sha256(r["path"].encode()).hexdigest(), vectors[i]) for i, r in enumerate(records)}
    root = folder.parent / "synthetic-archive"  # never read: the benchmark searches without checking files
    identity = {"name_or_path": "synthetic", "revision": None, "weights_sha256": "0" * 64, "model_class": None}
    commit_index(
        folder,
        FolderScan(root, records, []),
        BuildPlan(records=records, reused={}, todo=[], still_skipped=[], chunk_size=4096),
        encoded,
        [],
        identity=identity,
        processor_sha256=None,
        recursive=True,
    )
    written_s = time.perf_counter() - start
    del encoded, vectors
    index = rebuild_ann(folder, AnnSettings(factory))
    ann = {k: index.ann[k] for k in ("factory", "nprobe", "bytes_per_image", "trained_on", "build_seconds")}
    made = {"write_s": round(written_s, 1), "ann_s": round(time.perf_counter() - start - written_s, 1), **ann}
    stamp.write_text(json.dumps({"settings": settings, "build": made}))
    return made


# ----------------------------------------------------------------------------- one step


def _status_mib() -> dict[str, float]:
    """Peak and current resident memory of this process, from /proc/self/status."""
    wanted = {"VmHWM": "peak_rss_mib", "VmRSS": "rss_mib", "RssAnon": "rss_anon_mib", "RssFile": "rss_file_mib"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in wanted:
            out[wanted[key]] = round(int(line.split()[1]) / 1024.0, 1)
    return out


def _query(seed: int) -> Any:
    import torch

    q = torch.from_numpy(np.random.default_rng([seed, 1]).standard_normal((1, DIM), dtype=np.float32))
    return torch.nn.functional.normalize(q, dim=-1)


def _eager(folder: Path, q: Any) -> tuple[Any, list[int], float, float]:
    """The load before the memory map (whole-matrix ``isfinite``) and a one-product exact query."""
    import torch
    from safetensors.torch import load_file

    from msa_hf.retrieval.index import sha256_file

    start = time.perf_counter()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert sha256_file(folder / "embeddings.safetensors") == manifest["embeddings_sha256"]
    embeddings = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    assert tuple(embeddings.shape) == (len(manifest["files"]), manifest["embedding_dim"])
    assert bool(torch.isfinite(embeddings).all(dim=1).all())
    embeddings = embeddings.float()
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = (q @ embeddings.t())[0]  # (Q, N), as ImageIndex._search_torch did
    kth = scores.topk(K).values[-1]
    cand = (scores >= kth).nonzero().squeeze(1)
    _, order = torch.sort(scores[cand], descending=True, stable=True)
    rows = cand[order[:K]].tolist()
    return (manifest, embeddings), rows, load_s, time.perf_counter() - start


def run_step(step: str, folder: Path, seed: int) -> dict[str, Any]:
    """One measurement, in its own process."""
    import faiss  # noqa: F401  (every step pays the same imports)
    import torch  # noqa: F401

    from msa_hf.retrieval.index import ImageIndex

    result: dict[str, Any] = {"step": step}
    q = _query(seed)
    loaded: Any = None  # kept until the memory is read, as a search process keeps its index
    if step == "manifest":
        start = time.perf_counter()
        loaded = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        result |= {"load_s": round(time.perf_counter() - start, 3), "records": len(loaded["files"])}
    elif step == "eager":
        loaded, rows, load_s, query_s = _eager(folder, q)
        result |= {"load_s": round(load_s, 3), "query_ms": round(1000 * query_s, 2), "rows": rows}
    elif step != "imports":
        start = time.perf_counter()
        index = loaded = ImageIndex.load(folder)
        load_s = time.perf_counter() - start
        backend = {"ann": "ann", "exact": "torch", "exact_faiss": "faiss"}[step]
        times = []
        for _ in range(2):  # the first query of the approximate index reads ann.faiss
            start = time.perf_counter()
            hits = index.search(q, k=K, backend=backend, check_files=False)[0]
            times.append(time.perf_counter() - start)
        result |= {
            "load_s": round(load_s, 3),
            "query_ms": round(1000 * times[0], 2),
            "second_query_ms": round(1000 * times[1], 2),
            "rows": [h.row for h in hits],
        }
    memory = _status_mib()
    del loaded
    return {**result, **memory}


# ----------------------------------------------------------------------------- report


def _markdown(report: dict[str, Any]) -> str:
    steps = {r["step"]: r for r in report["steps"]}
    lines = [
        "# Search-process memory: eager load vs memory-mapped `ImageIndex.load`",
        "",
        f"{report['date']}, commit {report['commit']}, {report['machine']}; load average at start "
        f"{report['load_average_start']}, at end {report['load_average_end']}; `{report['command']}` "
        f"({report['threads']}), {report['wall_s']:.0f} s. {report['note']}",
        "",
        f"Index: {report['n']:,} random unit vectors of dimension {DIM} "
        f"({report['embeddings_mib']:,.0f} MiB `embeddings.safetensors`, {report['manifest_mib']:,.0f} MiB "
        f"`manifest.json`), approximate index {report['index']}; written by `commit_index` in "
        f"{report['build']['write_s']} s, approximate index by `rebuild_ann` in {report['build']['ann_s']} s.",
        "",
        "| step | peak RSS MiB | peak above imports | at end: RSS | anonymous | file pages | load s | query ms | "
        "2nd query ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    floor = steps["imports"]["peak_rss_mib"]
    for r in report["steps"]:
        lines.append(
            f"| {r['step']} | {r['peak_rss_mib']:,.0f} | {r['peak_rss_mib'] - floor:,.0f} | {r['rss_mib']:,.0f} | "
            f"{r['rss_anon_mib']:,.0f} | "
            f"{r['rss_file_mib']:,.0f} | {r.get('load_s', '')} | {r.get('query_ms', '')} | "
            f"{r.get('second_query_ms', '')} |"
        )
    imports, manifest = steps["imports"]["peak_rss_mib"], steps["manifest"]["peak_rss_mib"]
    lines += [
        "",
        f"- Peak RSS, eager load + exact query / `ImageIndex.load` + approximate query: "
        f"**{report['ratio_eager_over_ann']}×** ({steps['eager']['peak_rss_mib']:,.0f} / "
        f"{steps['ann']['peak_rss_mib']:,.0f} MiB); above the imports: **{report['ratio_above_imports']}×**.",
        f"- The manifest's file list: {manifest - imports:,.0f} MiB above the imports' {imports:,.0f} MiB "
        f"({report['manifest_bytes_per_record']:.0f} B per record resident, for "
        f"{report['manifest_mib'] * MIB / report['n']:.0f} B of JSON); of `ImageIndex.load` + approximate query's "
        f"{steps['ann']['peak_rss_mib'] - imports:,.0f} MiB above the imports it is "
        f"{100 * (manifest - imports) / max(1.0, steps['ann']['peak_rss_mib'] - imports):.0f} %.",
        f"- Exact results equal (eager one-product search, blocked torch, blocked FAISS): {report['exact_rows_equal']}.",
    ]
    return "\n".join(lines) + "\n"


def _child(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--index-dir", str(args.index_dir), "--n", str(args.n)]
    cmd += ["--factory", args.factory, "--seed", str(args.seed), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    p.add_argument("--factory", default="IVF1024,SQ8", help="the approximate index (msa-index ann --index-factory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index-dir", type=Path, default=Path("/tmp/msa-index-memory/index"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/index_memory"))
    p.add_argument("--note", default="", help="what else ran on the machine")
    p.add_argument("--step", choices=("build", *STEPS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step == "build":
        print(json.dumps(build(args.index_dir, args.n, args.factory, args.seed)))
        return 0
    if args.step:
        print(json.dumps(run_step(args.step, args.index_dir, args.seed)))
        return 0
    start, load_start = time.perf_counter(), os.getloadavg()
    built = _child(args, "--step", "build")
    print(f"index: {built}", flush=True)
    steps = []
    for step in STEPS:
        steps.append(_child(args, "--step", step))
        print(json.dumps(steps[-1]), flush=True)
    by = {s["step"]: s for s in steps}
    manifest = json.loads((args.index_dir / "manifest.json").read_text(encoding="utf-8"))
    report = {
        "n": args.n,
        "index": f"{manifest['ann']['factory']} ({manifest['ann']['bytes_per_image']} bytes per image)",
        "build": built,
        "embeddings_mib": round((args.index_dir / "embeddings.safetensors").stat().st_size / MIB, 1),
        "manifest_mib": round((args.index_dir / "manifest.json").stat().st_size / MIB, 1),
        "manifest_bytes_per_record": round(
            (by["manifest"]["peak_rss_mib"] - by["imports"]["peak_rss_mib"]) * MIB / args.n, 1
        ),
        "ratio_eager_over_ann": round(by["eager"]["peak_rss_mib"] / by["ann"]["peak_rss_mib"], 2),
        "ratio_above_imports": round(
            (by["eager"]["peak_rss_mib"] - by["imports"]["peak_rss_mib"])
            / (by["ann"]["peak_rss_mib"] - by["imports"]["peak_rss_mib"]),
            2,
        ),
        "exact_rows_equal": by["eager"]["rows"] == by["exact"]["rows"] == by["exact_faiss"]["rows"],
        "steps": steps,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "threads": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "command": "python benchmarks/index_memory.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "wall_s": round(time.perf_counter() - start, 1),
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(_markdown(report), encoding="utf-8")
    print(_markdown(report))
    return 0 if report["exact_rows_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
