"""Command-line tools: ``msa-eval``, ``msa-index``, ``msa-search``, ``msa-classify``.

Each ``*_main(argv=None) -> int`` returns an exit status instead of exiting, so tests can call
it directly. Exit codes follow :mod:`msa_hf.cli_utils`: 0 ok, 2 bad usage or input (a missing
folder, an empty query, a model that does not load or does not match the index, a folder
that is not an index), 1 a runtime failure (a build already running, a full disk, the Hub
unreachable), 3 ``msa-index status`` found the index stale. Errors print one
``prog: error: ...`` line (``MSA_HF_DEBUG=1`` gives the traceback); warnings (skipped files,
stale hits, ...) print as ``prog: warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msa_hf.cli_utils import (
    EXIT_OK,
    EXIT_STALE,
    UsageError,
    existing_path,
    positive_int,
    run_command,
)
from msa_hf.sources import path_or_hub_id

__all__ = ["add_search_options", "eval_main", "index_main", "search_main", "classify_main"]

# What each of msa_hf.retrieval.TIE_RULES means, for metrics.json (kept here so --help imports no torch).
TIE_RULE_PROTOCOL = {
    "pessimistic": "a competitor tied with the ground truth counts as ranked ahead",
    "expected": "expected recall over a random order of tied items",
    "argsort": "ranks in np.argsort(scores)[::-1] order, as the published evaluation code (ties machine-dependent)",
}


MODEL_EXPECTED = "a folder written by save_pretrained (model + processor), a Hub id or a preset"
INDEX_EXPECTED = "an index folder; create one with `msa-index build IMAGE_FOLDER --model M --out INDEX`"
INDEX_HELP = "index folder written by `msa-index build`"


def _add_common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument(
        "--model",
        required=model_required,
        type=path_or_hub_id(MODEL_EXPECTED),
        help="saved MSA folder (save_pretrained of model + processor), Hub id, or a pretrained preset (untrained heads)",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub --model (default: main)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--batch-size", type=positive_int("--batch-size"), default=32, help="images per forward pass (default 32)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], file: Any = None) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)


# ---------------------------------------------------------------------------- msa-eval


def _load_split(source: str, split: str, on_bad: str = "error", allow_outside_root: bool = False) -> Any:
    """A corpus split via ``msa_hf.data.load_corpus`` (any source it reads, ``save_to_disk`` folders included);
    a corpus with problems prints its report and ends in one line that names this command's flags."""
    try:
        from msa_hf.data import CorpusValidationError, load_corpus
        from msa_hf.data.validation import fix_hint
    except ImportError as error:
        raise ImportError(f"--corpus needs the `datasets` package: pip install 'msa_hf[data]' ({error}).") from error
    try:
        corpus = load_corpus(source, on_bad=on_bad, allow_outside_root=allow_outside_root)
    except CorpusValidationError as error:
        report = error.report
        print(report.format(max_examples=20), file=sys.stderr)
        raise UsageError(
            f"{len(report.bad_indices)} of {report.n_images} images in {report.source} have problems (listed "
            f"above). {fix_hint(report, '--on-bad drop', '--allow-outside-root')}"
        ) from None
    if split not in corpus:
        raise ValueError(f"--split {split!r} is not in corpus {source!r}; it has splits {list(corpus)}.")
    return corpus[split]


def _eval(args: argparse.Namespace) -> int:
    from msa_hf.data import corpus_info
    from msa_hf.factory import create_model_and_processor
    from msa_hf.io_utils import atomic_write_json
    from msa_hf.sources import model_fingerprint

    from .evaluation import evaluate_corpus
    from .metrics import format_metrics_table
    from .visualize import render_retrieval_examples

    dataset = _load_split(args.corpus, args.split, args.on_bad, args.allow_outside_root)
    model, processor, _ = create_model_and_processor(args.model, args.revision, device=args.device)
    result = evaluate_corpus(
        model,
        processor,
        dataset,
        max_images=args.max_images,
        batch_size=args.batch_size,
        text_batch_size=args.text_batch_size,
        progress=not args.no_progress,
        num_workers=args.workers,
        ties=args.ties,
    )
    print(format_metrics_table(result.metrics))

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    identity = model_fingerprint(model)
    report = {
        "model": identity,
        "corpus": args.corpus,
        "split": args.split,
        "max_images": args.max_images,
        "dropped_images": corpus_info(dataset)["dropped_images"],  # entries left out by --on-bad drop
        "metrics": result.metrics,
        "ties": args.ties,
        "protocol": "docs/method.md section 7: R@K in percent over 0-based ranks < K; mr = mean of the six recalls; "
        "medr/meanr 1-based; " + TIE_RULE_PROTOCOL[args.ties],
    }
    atomic_write_json(out / "metrics.json", report)
    print(f"metrics written to {out / 'metrics.json'}")
    if args.num_examples > 0:
        images_only = dataset.select(range(len(result.image_embeds))).select_columns(["image"])
        png = render_retrieval_examples(
            result.image_embeds,
            result.text_embeds,
            result.caption_image_ids,
            result.captions,
            lambda i: images_only[int(i)]["image"],
            out / "retrieval_examples.png",
            num_text_queries=args.num_examples,
            num_image_queries=args.num_examples,
            seed=args.seed,
        )
        print(f"examples written to {png}")
    return EXIT_OK


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``msa-eval --model M --corpus SOURCE --split test``: metrics table, metrics.json, examples PNG."""
    p = argparse.ArgumentParser(
        prog="msa-eval",
        description="Image-text retrieval evaluation of an MSA model "
        "on a corpus split (R@1/5/10 both directions, mR, median/mean rank).",
    )
    _add_common(p)
    p.add_argument(
        "--corpus",
        required=True,
        type=path_or_hub_id("a Karpathy JSON, an imagefolder, a save_to_disk folder or a Hub dataset id"),
        help="corpus source understood by msa_hf.data.load_corpus",
    )
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument(
        "--on-bad",
        choices=["error", "drop"],
        default="error",
        help="corpus entries with problems (missing or unreadable images, bad captions): refuse the corpus "
        "(default) or leave them out of the evaluation, saying how many",
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths that resolve outside the corpus folder (a shared image store)",
    )
    p.add_argument(
        "--text-batch-size",
        type=positive_int("--text-batch-size"),
        default=128,
        help="captions per forward pass (default 128)",
    )
    p.add_argument(
        "--max-images",
        type=positive_int("--max-images"),
        default=None,
        help="evaluate only the first N images of the split (quick checks)",
    )
    p.add_argument("--output-dir", default="msa-eval-output", help="where metrics.json and the PNG go")
    p.add_argument(
        "--num-examples", type=int, default=3, help="text and image queries drawn in retrieval_examples.png (0: no PNG)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for picking the example queries")
    p.add_argument(
        "--ties",
        choices=list(TIE_RULE_PROTOCOL),
        default="pessimistic",
        help="tie rule for identical scores (identical captions of different images, as in UCM-Captions): tied "
        "competitors rank ahead (default); 'expected': the expected recall over a random order of tied items; "
        "'argsort': the published evaluation's np.argsort(scores)[::-1] order, comparable with published tables",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="data-loader worker processes that decode images (default 0: in-process)"
    )
    return run_command("msa-eval", _eval, p, argv)


# ---------------------------------------------------------------------------- msa-index


def _index_build(args: argparse.Namespace) -> int:
    from msa_hf.factory import create_model_and_processor

    from .distributed import process_group
    from .index_build import build_index

    if not Path(args.image_folder).is_dir():
        raise NotADirectoryError(f"IMAGE_FOLDER {args.image_folder} is not a folder.")
    if args.overwrite and args.relocate:
        raise ValueError("--overwrite re-encodes everything and --relocate keeps embeddings: give one of them.")
    ann = _ann_settings(args) if args.index_factory is not None else None
    group = process_group()  # one process, or each of an `accelerate launch` / `torchrun` job
    model, processor, _ = create_model_and_processor(args.model, args.revision, device=args.device or group.device)
    index = build_index(
        args.image_folder,
        model,
        processor,
        args.out,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        recursive=not args.no_recursive,
        overwrite=args.overwrite,
        relocate=args.relocate,
        verify=args.verify,
        num_workers=args.workers,
        progress=not args.no_progress,
        group=group,
        ann=ann,
    )
    if index is None:  # not the main process: the main process reports
        return EXIT_OK
    m = index.manifest
    print(
        f"index {index.path}: {len(index)} images, dim {m['embedding_dim']} "
        f"({m.get('encoded', len(index))} encoded, {m.get('reused', 0)} reused, {len(m['skipped'])} skipped)"
    )
    _print_ann(index)
    return EXIT_OK


def _ann_settings(args: argparse.Namespace) -> Any:
    """The ``--index-factory`` options as :class:`~msa_hf.retrieval.index_ann.AnnSettings`."""
    from .index_ann import AnnSettings

    if not args.index_factory.strip():
        raise ValueError("--index-factory is empty; give a FAISS index_factory string, e.g. 'IVF4096,PQ32' or 'Flat'.")
    return AnnSettings(
        factory=args.index_factory.replace(" ", ""),
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        train_size=args.train_size,
        seed=args.seed,
        recall_queries=args.recall_queries,
    )


def _print_ann(index: Any) -> None:
    """The approximate index's measured recall and size, or that search is exact."""
    from .index_ann import factory_label

    ann = index.ann
    if ann is None:
        print("search: exact (Flat)")
        return
    exact_bytes = 4 * index.manifest["embedding_dim"]
    print(
        f"search: {factory_label(ann)}, recall@10 {ann['recall_at_10']:.3f} against exact search on "
        f"{ann['measured_queries']} held-out images; {ann['bytes_per_image']:g} bytes per image "
        f"(+{exact_bytes} for the exact embeddings kept on disk); built in {ann['build_seconds']:.1f} s"
    )


def _index_ann(args: argparse.Namespace) -> int:
    from .index_build import rebuild_ann

    index = rebuild_ann(args.index, _ann_settings(args))
    print(f"index {index.path}: {len(index)} images, dim {index.manifest['embedding_dim']} (nothing re-encoded)")
    _print_ann(index)
    return EXIT_OK


def _add_ann_options(p: argparse.ArgumentParser, factory_required: bool, factory_help: str) -> None:
    p.add_argument("--index-factory", required=factory_required, default=None, metavar="STRING", help=factory_help)
    p.add_argument(
        "--nprobe",
        type=positive_int("--nprobe"),
        default=None,
        help="IVF lists searched per query, stored as the index's default (default 32); more: higher recall, slower",
    )
    p.add_argument(
        "--ef-search",
        type=positive_int("--ef-search"),
        default=None,
        help="HNSW candidate list per query, stored as the index's default (default 64)",
    )
    p.add_argument(
        "--train-size",
        type=positive_int("--train-size"),
        default=None,
        help="embeddings sampled to train IVF/PQ (default: 64 per IVF list, at least 10,000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the training and recall samples (default 0)")
    p.add_argument(
        "--recall-queries",
        type=positive_int("--recall-queries"),
        default=1000,
        help="held-out images whose recall@10 against exact search is reported (default 1000, at most 1/10 of N)",
    )


def _index_info(args: argparse.Namespace) -> int:
    from .index import ImageIndex

    index = ImageIndex.load(args.index)
    m = index.manifest
    info = {
        k: m[k]
        for k in (
            "root",
            "num_images",
            "embedding_dim",
            "normalized",
            "similarity",
            "created",
            "msa_hf_version",
            "model",
        )
        if k in m
    }
    info["skipped"] = len(m.get("skipped", []))
    info["ann"] = m.get("ann") or "none (exact search)"
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return EXIT_OK


def _index_status(args: argparse.Namespace) -> int:
    from .index import ImageIndex

    index = ImageIndex.load(args.index)
    report = index.stale_files(args.folder, verify=args.verify)
    print(report.summary())
    for name in ("added", "removed", "modified", "changed_skipped"):
        for path in getattr(report, name)[:20]:
            print(f"  {name}: {path}")
    if report.is_stale:
        folder = args.folder or index.root
        print(f"update it with: msa-index build {folder} --out {index.path}")
        return EXIT_STALE
    return EXIT_OK


_VERIFY_HELP = "hash every file and compare it with the index (default: only files whose size, mtime or ctime changed)"


def index_main(argv: Sequence[str] | None = None) -> int:
    """``msa-index build IMAGE_FOLDER --model M --out INDEX`` (and ``info``/``status``)."""
    p = argparse.ArgumentParser(prog="msa-index", description="Build and inspect an on-disk image index.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="encode a folder of images into an index (resumable, incremental)")
    b.add_argument(
        "image_folder",
        metavar="IMAGE_FOLDER",
        type=existing_path("a folder of images"),
        help="folder of images to index (searched recursively)",
    )
    _add_common(b)
    b.add_argument("--out", required=True, metavar="INDEX", help="index folder to create or update")
    b.add_argument(
        "--chunk-size",
        type=positive_int("--chunk-size"),
        default=1024,
        help="images per on-disk chunk: the unit of resumption (default 1024)",
    )
    b.add_argument("--overwrite", action="store_true", help="replace an index built with another model/folder")
    b.add_argument(
        "--relocate",
        action="store_true",
        help="the image folder moved: update an index of the old folder, keeping the embeddings of files "
        "whose content is unchanged",
    )
    b.add_argument("--no-recursive", action="store_true", help="only the folder's top level")
    b.add_argument("--verify", action="store_true", help=_VERIFY_HELP)
    b.add_argument(
        "--workers", type=int, default=0, help="data-loader worker processes that read and decode images (default 0)"
    )
    _add_ann_options(
        b,
        False,
        "approximate search for large archives: a FAISS index_factory string such as 'IVF4096,PQ32' or "
        "'HNSW32', built from the embeddings and checked against exact search; 'Flat' is exact search "
        "(default: what the index has, Flat for a new one). See docs/retrieval.md#archive-scale-search",
    )
    b.set_defaults(fn=_index_build)
    a = sub.add_parser(
        "ann", help="(re)build an index's approximate search from its stored embeddings (no model, no re-encoding)"
    )
    a.add_argument("index", metavar="INDEX", type=existing_path(INDEX_EXPECTED), help=INDEX_HELP)
    _add_ann_options(a, True, "FAISS index_factory string ('IVF4096,PQ32', 'HNSW32'; 'Flat' removes it)")
    a.set_defaults(fn=_index_ann)
    i = sub.add_parser("info", help="print an index's manifest summary")
    i.add_argument("index", metavar="INDEX", type=existing_path(INDEX_EXPECTED), help=INDEX_HELP)
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.set_defaults(fn=_index_info)
    s = sub.add_parser("status", help=f"compare an index with its image folder (exit {EXIT_STALE} if stale)")
    s.add_argument("index", metavar="INDEX", type=existing_path(INDEX_EXPECTED), help=INDEX_HELP)
    s.add_argument("--folder", default=None, help="image folder (default: the one recorded in the index)")
    s.add_argument("--verify", action="store_true", help=_VERIFY_HELP)
    s.set_defaults(fn=_index_status)
    return run_command("msa-index", lambda a: a.fn(a), p, argv)


# ---------------------------------------------------------------------------- msa-search


def _search(args: argparse.Namespace) -> int:
    from .index import ImageIndex, search_index

    if bool(args.query) == bool(args.image):
        raise ValueError("give a text QUERY or --image PATH (not both).")
    for path in args.image or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image {path}: no such file.")
    index = ImageIndex.load(args.index)
    results = search_index(
        index,
        text=args.query or None,
        image=args.image or None,
        k=args.k,
        model=args.model,
        revision=args.revision,
        backend=args.backend,
        device=args.device,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
    )
    _warn_stale_hits(index, [h for hits in results for h in hits])
    queries = list(args.query or args.image)
    if args.json:
        payload = [
            {"query": q, "type": "text" if args.query else "image", "results": [h.to_dict() for h in hits]}
            for q, hits in zip(queries, results)
        ]
        print(json.dumps(payload if len(payload) > 1 else payload[0], indent=2))
        return EXIT_OK
    for q, hits in zip(queries, results):
        print(f"query: {q}")
        _print_table(["rank", "score", "path"], [[h.rank, f"{h.score:.4f}", h.path] for h in hits])
        print()
    return EXIT_OK


def _warn_stale_hits(index: Any, hits: Sequence[Any]) -> None:
    """One warning for hits whose file is missing or changed since it was embedded."""
    from .index import relocate_hint

    stale = sorted({(h.stale, h.path) for h in hits if h.stale})
    if not stale:
        return
    if not index.root.is_dir():
        warnings.warn(relocate_hint(index.path, index.root), stacklevel=2)
        return
    listed = "\n".join(f"  {path}: {why} since it was indexed" for why, path in stale[:10])
    warnings.warn(
        f"{len(stale)} result(s) may be out of date (their score is from the file as it was):\n{listed}\n"
        f"Update the index: msa-index build {index.root} --out {index.path}",
        stacklevel=2,
    )


def search_main(argv: Sequence[str] | None = None) -> int:
    """``msa-search INDEX "text" -k 10`` or ``msa-search INDEX --image query.png``."""
    p = argparse.ArgumentParser(prog="msa-search", description="Search an image index by text or by image.")
    p.add_argument("index", metavar="INDEX", type=existing_path(INDEX_EXPECTED), help=INDEX_HELP)
    p.add_argument("query", nargs="*", metavar="QUERY", help="text query (several give one result table each)")
    p.add_argument(
        "--image", action="append", metavar="PATH", type=existing_path("an image file"), help="query image (repeatable)"
    )
    p.add_argument("-k", type=positive_int("-k"), default=10, help="results per query (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--model",
        default=None,
        type=path_or_hub_id(MODEL_EXPECTED),
        help="model to embed the query (default: the index's own model); must have the index's weights",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub --model (default: main)")
    add_search_options(p)
    p.add_argument("--device", default=None, help="torch device for the query model (default: cuda if available)")
    return run_command("msa-search", _search, p, argv)


def add_search_options(p: argparse.ArgumentParser) -> None:
    """``--backend``, ``--nprobe`` and ``--ef-search``, as ``msa-search`` and ``msa-app`` take them."""
    p.add_argument(
        "--backend",
        choices=("torch", "faiss", "ann"),
        default=None,
        help="'ann': the index's approximate search (the default where `msa-index build --index-factory` made "
        "one); 'torch' (the default otherwise) or 'faiss': exact search, same results",
    )
    p.add_argument(
        "--nprobe",
        type=positive_int("--nprobe"),
        default=None,
        help="IVF lists searched per query (default: the index's, set at build)",
    )
    p.add_argument(
        "--ef-search",
        type=positive_int("--ef-search"),
        default=None,
        help="HNSW candidate list per query (default: the index's, set at build)",
    )


# ---------------------------------------------------------------------------- msa-classify


def _read_labels(args: argparse.Namespace) -> list[str] | None:
    if args.labels and args.labels_file:
        raise ValueError("give --labels or --labels-file, not both.")
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise FileNotFoundError(f"--labels-file {path}: no such file.")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.labels:
        return [x.strip() for x in args.labels.split(",")]
    return None


def _classify(args: argparse.Namespace) -> int:
    from msa_hf.factory import create_model_and_processor

    from .classify import DEFAULT_TEMPLATE, classify_folder

    if not Path(args.image_folder).is_dir():
        raise NotADirectoryError(f"IMAGE_FOLDER {args.image_folder} is not a folder.")
    labels = _read_labels(args)
    templates = args.template or [DEFAULT_TEMPLATE]
    model, processor, _ = create_model_and_processor(args.model, args.revision, device=args.device)
    result = classify_folder(
        args.image_folder,
        model,
        processor,
        labels,
        templates=templates,
        scale=args.scale,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    payload = result.to_dict(top=args.top)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            import csv

            with open(out, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["file", "label", "prediction", *result.labels])
                for i, name in enumerate(result.files):
                    writer.writerow(
                        [
                            name,
                            (result.true_labels or [None] * len(result.files))[i] or "",
                            result.predictions[i],
                            *[f"{p:.6f}" for p in result.probs[i]],
                        ]
                    )
        else:
            out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    headers = ["file", "prediction", "prob"] + (["label", "ok"] if result.true_labels is not None else [])
    rows = []
    for row in payload["images"]:
        top = ", ".join(f"{k} {v:.3f}" for k, v in row["probs"].items())
        r = [row["file"], row["prediction"], top]
        if result.true_labels is not None:
            label = row["label"]
            r += [label or "?", "" if label is None else ("yes" if label == row["prediction"] else "no")]
        rows.append(r)
    _print_table(headers, rows)
    if result.accuracy is not None:
        n = sum(t is not None for t in result.true_labels or [])
        print(f"\naccuracy: {result.accuracy:.2f}% over {n} images in class folders")
        for label, acc in result.per_class_accuracy.items():
            print(f"  {label}: {acc:.2f}%")
    if args.output:
        print(f"written to {args.output}")
    return EXIT_OK


def classify_main(argv: Sequence[str] | None = None) -> int:
    """``msa-classify IMAGE_FOLDER --model M --labels airport,farmland,... [--template ...]``."""
    p = argparse.ArgumentParser(
        prog="msa-classify",
        description="Zero-shot scene classification of a folder of "
        "images; reports accuracy when the folder has one subfolder per class.",
    )
    p.add_argument(
        "image_folder",
        metavar="IMAGE_FOLDER",
        type=existing_path("a folder of images"),
        help="folder of images; one subfolder per class also reports accuracy",
    )
    _add_common(p)
    p.add_argument("--labels", default=None, help="comma-separated labels (default: the class subfolder names)")
    p.add_argument(
        "--labels-file", default=None, type=existing_path("a text file"), help="file with one label per line"
    )
    p.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt with {} for the label, repeatable for prompt ensembling (default: 'an aerial image of {}')",
    )
    p.add_argument(
        "--scale", type=float, default=100.0, help="softmax scale on cosine similarity (calibration only; default 100)"
    )
    p.add_argument("--top", type=positive_int("--top"), default=3, help="labels shown per image (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--output", default=None, help="also write all probabilities to FILE (.json or .csv)")
    p.add_argument(
        "--workers", type=int, default=0, help="data-loader worker processes that read and decode images (default 0)"
    )
    return run_command("msa-classify", _classify, p, argv)
