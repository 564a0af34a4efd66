#!/usr/bin/env python
"""Exact vs approximate (IVF-PQ, HNSW) search over 1M and 10M synthetic 384-d embeddings.

The approximate indexes are made by the functions ``msa-index build --index-factory`` uses
(:mod:`msa_hf.retrieval.index_ann`: seeded training sample, chunked add), and recall is
measured against :func:`~msa_hf.retrieval.index_ann.exact_search`, the same chunked exact
search the build's recall report uses.

**Data.** Not uniform noise (on which every neighbour is as far as any other and recall means
nothing): a Gaussian mixture on the unit sphere, like embeddings of an archive of many scene
types. ``N / 200`` cluster centres are drawn with an anisotropic spectrum (dimension ``i``
scaled by ``(i + 1) ** -0.5``, as the PCA spectrum of real embeddings decays), cluster sizes
are log-normal (a few big scene types, many small ones), and each point is its centre plus
noise of the same spectrum and relative norm ``--noise`` (0.5: cosine about 0.9 to its centre),
L2-normalised. The embeddings are stored as float16 on disk (``--data-dir``, 768 bytes per
vector: 7.2 GiB at 10M) and read in chunks with ``pread``, never memory-mapped, so the peak RAM
reported is the method's own and not the file's page cache. Queries (``--queries``, default
1,000) are fresh draws of the same mixture, not in the database; the ground truth is their
exact top-10.

**Methods.** Each runs in a fresh subprocess whose peak resident memory (``ru_maxrss``) is
reported:

* ``exact``: up to ``--exact-in-ram`` vectors (default 1M) a FAISS ``IndexFlatIP`` in RAM
  (what ``msa-search --backend faiss`` does); above it, chunked exact search over the float16
  file (an in-RAM float32 matrix of 10M x 384 is 14.3 GiB, over this machine's budget).
* ``IVF4096,PQ32``: 4,096 lists, 32-byte codes, trained on 64 x 4,096 sampled vectors; a
  sweep of ``nprobe``.
* ``IVF4096,SQ8``: the same lists with 8-bit scalar-quantised vectors (384 bytes each).
* ``HNSW32``: an HNSW graph over float32 vectors, a sweep of ``efSearch``; only where it fits
  in ``--max-ram-gib`` (float32 vectors + 2 x 32 neighbour links per vector).

Latency is one query per call (as the app asks), ``--latency-queries`` calls after a warm-up,
p50 and p90. Run it single-threaded on a shared machine and say so::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 python benchmarks/index_scale.py
    python benchmarks/index_scale.py --sizes 100000 --methods exact IVF256,PQ32 HNSW32   # a quick look

Results go to ``--out`` (``.json`` and ``.md``, default ``benchmarks/results/index_scale``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from run_info import git_commit

from msa_hf.retrieval.index_ann import (
    add_embeddings,
    create_ann,
    default_train_size,
    exact_search,
    recall_at_k,
    set_search_params,
    train_ann,
)

DIM = 384
K = 10
NPROBES = (1, 4, 16, 32, 64, 128)
EF_SEARCHES = (16, 32, 64, 128, 256)
GIB = 1024**3


class Float16Rows:
    """A float16 ``(n, d)`` matrix in a raw file, read with ``pread``: row slices and row lists
    come back as float32 without mapping the file (so they do not count as this process's RAM)."""

    def __init__(self, path: Path, n: int, dim: int = DIM) -> None:
        self.path, self.n, self.dim = path, n, dim
        self.row_bytes = 2 * dim
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.dim)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.n)
            raw = os.pread(self.fd, (stop - start) * self.row_bytes, start * self.row_bytes)
            return np.frombuffer(raw, dtype=np.float16).reshape(-1, self.dim).astype(np.float32)
        rows = np.asarray(key)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for i, row in enumerate(rows.tolist()):
            out[i] = np.frombuffer(os.pread(self.fd, self.row_bytes, row * self.row_bytes), dtype=np.float16)
        return out


# ----------------------------------------------------------------------------- data


def _spectrum(dim: int) -> np.ndarray:
    s = (np.arange(dim, dtype=np.float32) + 1.0) ** -0.5
    return s / np.linalg.norm(s)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mixture(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres and cluster probabilities of the mixture for an ``n``-vector set."""
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n // 200)
    centres = _normalise(rng.standard_normal((n_clusters, DIM), dtype=np.float32) * _spectrum(DIM))
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    return centres.astype(np.float32), weights / weights.sum()


def _draw(rng: np.random.Generator, centres: np.ndarray, probs: np.ndarray, m: int, noise: float) -> np.ndarray:
    ids = rng.choice(len(centres), size=m, p=probs)
    jitter = rng.standard_normal((m, DIM), dtype=np.float32) * (_spectrum(DIM) * noise)
    return _normalise(centres[ids] + jitter).astype(np.float32)


def make_data(folder: Path, n: int, n_queries: int, noise: float, seed: int) -> dict[str, Any]:
    """Write (or reuse) the float16 embeddings, the queries and their exact top-10."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"n{n}-q{n_queries}-noise{noise}-seed{seed}"
    emb, queries, truth = (Path(f"{stem}.f16"), Path(f"{stem}.queries.npy"), Path(f"{stem}.truth.npy"))
    info: dict[str, Any] = {"file": str(emb), "file_gib": round(n * 2 * DIM / GIB, 2)}
    centres, probs = _mixture(n, seed)
    if not emb.is_file() or emb.stat().st_size != n * 2 * DIM:
        start = time.perf_counter()
        rng = np.random.default_rng([seed, 1])
        tmp = emb.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for s in range(0, n, 250_000):
                f.write(_draw(rng, centres, probs, min(250_000, n - s), noise).astype(np.float16).tobytes())
        tmp.rename(emb)
        info["generate_s"] = round(time.perf_counter() - start, 1)
    if not queries.is_file() or not truth.is_file():
        q = _draw(np.random.default_rng([seed, 2]), centres, probs, n_queries, noise)
        start = time.perf_counter()
        _, rows = exact_search(Float16Rows(emb, n), q, K)
        info["ground_truth_s"] = round(time.perf_counter() - start, 1)
        np.save(queries, q)
        np.save(truth, rows)
    return {**info, "queries": str(queries), "truth": str(truth)}


# ----------------------------------------------------------------------------- one method


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, not inherited from
    the parent across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _latency(search: Any, queries: np.ndarray, n: int) -> dict[str, float]:
    search(queries[:1])  # warm-up
    times = []
    for q in queries[:n]:
        start = time.perf_counter()
        search(q[None, :])
        times.append(1000.0 * (time.perf_counter() - start))
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p90_ms": round(float(np.percentile(times, 90)), 3)}


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Build one method over one data set and measure it (runs in its own subprocess)."""
    data = Float16Rows(Path(args.file), args.n)
    queries, truth = np.load(args.queries_file), np.load(args.truth)
    base_rss = _peak_rss_mib()
    start = time.perf_counter()
    if args.method == "exact" and args.n > args.exact_in_ram:
        index = None
        build_s = 0.0
        rows = []
        timings = _latency(lambda q: rows.append(exact_search(data, q, K)), queries, args.exact_latency_queries)
        recall = 1.0
        result = {"variant": "chunked over the float16 file", "settings": [{"recall_at_10": recall, **timings}]}
        index_bytes = 0
    else:
        factory = "Flat" if args.method == "exact" else args.method
        index = create_ann(factory, DIM)
        train_rows = np.array([], dtype=np.int64)
        if not index.is_trained:
            train_rows = np.sort(np.random.default_rng(0).permutation(args.n)[: default_train_size(index, args.n)])
            train_ann(index, data, train_rows, factory)
        train_s = time.perf_counter() - start
        add_embeddings(index, data)
        build_s = time.perf_counter() - start
        import faiss

        index_bytes = int(faiss.serialize_index(index).nbytes)
        settings = []
        sweep = (
            [("nprobe", p) for p in NPROBES if p <= faiss.extract_index_ivf(index).nlist]
            if factory.startswith("IVF")
            else [("efSearch", e) for e in EF_SEARCHES]
            if factory.startswith("HNSW")
            else [(None, None)]
        )
        for name, value in sweep:
            if name is not None:
                set_search_params(
                    index, factory, value if name == "nprobe" else None, value if name == "efSearch" else None
                )
            _, found = index.search(queries, K)
            timings = _latency(lambda q: index.search(q, K), queries, args.latency_queries)
            settings.append(
                {**({name: value} if name else {}), "recall_at_10": round(recall_at_k(found, truth), 4), **timings}
            )
        result = {
            "variant": "FAISS IndexFlatIP in RAM" if factory == "Flat" else f"train {len(train_rows):,} vectors",
            "train_s": round(train_s, 1),
            "settings": settings,
        }
    return {
        "n": args.n,
        "method": args.method,
        "build_s": round(build_s, 1),
        "index_bytes": index_bytes,
        "bytes_per_vector": round(index_bytes / args.n, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "rss_before_mib": round(base_rss, 1),
        **result,
    }


def fits(method: str, n: int, max_ram_gib: float) -> bool:
    """Whether ``method`` over ``n`` vectors fits the RAM budget (float32 HNSW / Flat storage)."""
    if method.startswith("HNSW"):
        return n * (4 * DIM + 2 * 4 * 32 + 16) / GIB < max_ram_gib
    return True


# ----------------------------------------------------------------------------- report


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Exact vs approximate search at archive scale",
        "",
        f"{report['date']}, commit {report['commit']}, {report['machine']}; load average at start "
        f"{report['load_average_start']}, at end {report['load_average_end']}; `{report['command']}` "
        f"({report['threads']}), {report['wall_s']:.0f} s. Single-thread numbers on a shared 2-core machine.",
        "",
        "| vectors | method | setting | build s | peak RAM MiB | bytes/vector | recall@10 | p50 ms | p90 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['n']:,} | {r['method']} | skipped: {r['skipped']} | | | | | | |")
            continue
        for s in r["settings"]:
            setting = ", ".join(f"{k} {v}" for k, v in s.items() if k in ("nprobe", "efSearch")) or r["variant"]
            lines.append(
                f"| {r['n']:,} | {r['method']} | {setting} | {r['build_s']} | {r['peak_rss_mib']:,.0f} | "
                f"{r['bytes_per_vector']} | {s['recall_at_10']:.3f} | {s['p50_ms']} | {s['p90_ms']} |"
            )
    lines += ["", "Data sets:", ""]
    for n, d in report["data"].items():
        lines.append(
            f"- {int(n):,} vectors: {d['file_gib']} GiB float16 on disk; "
            + ", ".join(f"{k} {v}" for k, v in d.items() if k.endswith("_s"))
        )
    return "\n".join(lines) + "\n"


def _write(out: Path, report: dict[str, Any], start: float, load_start: tuple[float, float, float]) -> None:
    report.update(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        commit=git_commit(),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        load_average_start=[round(x, 2) for x in load_start],
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        threads=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        command="python benchmarks/index_scale.py " + shlex.join(sys.argv[1:]),
        wall_s=round(time.perf_counter() - start, 1),
        data_generation=__doc__.split("**Data.**")[1].split("**Methods.**")[0].strip(),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(_markdown(report), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--methods", nargs="+", default=["exact", "IVF4096,PQ32", "IVF4096,SQ8", "HNSW32"])
    p.add_argument("--queries", type=int, default=1000, help="recall queries (exact top-10 computed for each)")
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--exact-latency-queries", type=int, default=5, help="latency queries of chunked exact search")
    p.add_argument("--exact-in-ram", type=int, default=1_000_000, help="largest N searched exactly in RAM")
    p.add_argument("--max-ram-gib", type=float, default=8.0, help="skip methods whose index would not fit")
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/msa-index-scale"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/index_scale"))
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--queries-file", help=argparse.SUPPRESS)
    p.add_argument("--truth", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    start = time.perf_counter()
    load_start = os.getloadavg()
    report: dict[str, Any] = {"data": {}, "rows": []}
    for n in args.sizes:
        data = make_data(args.data_dir, n, args.queries, args.noise, args.seed)
        report["data"][str(n)] = {k: v for k, v in data.items() if k not in ("queries", "truth", "file")}
        print(f"{n:,} vectors: {data}", flush=True)
        for method in args.methods:
            if not fits(method, n, args.max_ram_gib):
                report["rows"].append({"n": n, "method": method, "skipped": f"needs more than {args.max_ram_gib} GiB"})
                continue
            cmd = [sys.executable, __file__, "--one", "--n", str(n), "--method", method, "--file", data["file"]]
            cmd += ["--queries-file", data["queries"], "--truth", data["truth"]]
            cmd += [
                "--latency-queries",
                str(args.latency_queries),
                "--exact-latency-queries",
                str(args.exact_latency_queries),
            ]
            cmd += ["--exact-in-ram", str(args.exact_in_ram)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
            _write(args.out, report, start, load_start)  # a long run keeps what it has measured
    _write(args.out, report, start, load_start)
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
