"""``msa-data``: generate the ``rs-synth`` corpus, and inspect or validate any caption corpus.

msa-data synth --out data/rs-synth --n-images 1000 --seed 0 [--image-size 224]
msa-data inspect path/to/dataset_ucm.json --sheet ucm.png
msa-data validate path/to/dataset_ucm.json      # exit 0: no problems; 2: the report lists them
msa-data shard path/to/dataset_ucm.json shards/ucm --shard-size 1000 --num-proc 4   # Parquet shards to stream

Exit codes follow :mod:`msa_hf.cli_utils` (0 ok, 2 bad usage or input, 1 a runtime failure).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli_utils import EXIT_OK, UsageError, positive_int, run_command
from ..sources import path_or_hub_id

__all__ = ["main", "build_parser", "corpus_statistics", "contact_sheet"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _words(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def _open_header(value: dict[str, Any]) -> tuple[tuple[int, int], str]:
    import io

    from PIL import Image

    data = value.get("bytes")
    with Image.open(io.BytesIO(data) if data is not None else value["path"]) as im:
        return im.size, im.mode


def corpus_statistics(corpus: Any, *, progress: bool = False) -> dict[str, Any]:
    """Per-split counts, captions per image, caption lengths (words), vocabulary, image sizes/modes.

    Image sizes and modes come from file headers (nothing is decoded).
    """
    import datasets
    from tqdm.auto import tqdm

    stats: dict[str, Any] = {"splits": {}}
    vocab_all: set[str] = set()
    for split, ds in corpus.items():
        captions = ds["captions"]
        per_image = [len(c) for c in captions]
        lengths = [len(_words(c)) for caps in captions for c in caps]
        vocab = {w for caps in captions for c in caps for w in _words(c)}
        vocab_all |= vocab
        raw = ds.cast_column("image", datasets.Image(decode=False))["image"]
        sizes, modes = Counter(), Counter()
        for value in tqdm(raw, desc=f"reading image headers ({split})", disable=not progress, leave=False):
            size, mode = _open_header(value)
            sizes[f"{size[0]}x{size[1]}"] += 1
            modes[mode] += 1
        stats["splits"][split] = {
            "images": len(ds),
            "captions": len(lengths),
            "captions_per_image": {
                "min": min(per_image, default=0),
                "mean": round(statistics.fmean(per_image), 3) if per_image else 0,
                "max": max(per_image, default=0),
            },
            "caption_words": {
                "min": min(lengths, default=0),
                "mean": round(statistics.fmean(lengths), 2) if lengths else 0,
                "median": statistics.median(lengths) if lengths else 0,
                "max": max(lengths, default=0),
            },
            "distinct_captions": len({c for caps in captions for c in caps}),
            "vocabulary": len(vocab),
            "image_sizes": dict(sizes.most_common()),
            "image_modes": dict(modes.most_common()),
        }
    stats["vocabulary"] = len(vocab_all)
    return stats


def _format_problems(problems: dict[str, Any]) -> list[str]:
    if not problems["dropped_images"]:
        return []
    from .validation import PROBLEM_KINDS

    counts = ", ".join(f"{PROBLEM_KINDS[kind]}: {n}" for kind, n in problems["counts"].items())
    return [
        "",
        f"problems: {problems['dropped_images']} images were left out of these statistics ({counts}); "
        "`msa-data validate` lists every entry.",
    ]


def _format_statistics(name: str, stats: dict[str, Any]) -> str:
    lines = [f"corpus: {name}", f"vocabulary (all splits, lower-cased words): {stats['vocabulary']}", ""]
    header = f"{'split':<11}{'images':>8}{'captions':>10}{'distinct':>10}{'caps/img min/mean/max':>23}{'words min/mean/med/max':>24}{'vocab':>7}"
    lines.append(header)
    for split, s in stats["splits"].items():
        cpi, cw = s["captions_per_image"], s["caption_words"]
        per_image = f"{cpi['min']}/{cpi['mean']:.2f}/{cpi['max']}"
        words = f"{cw['min']}/{cw['mean']:.1f}/{cw['median']:g}/{cw['max']}"
        lines.append(
            f"{split:<11}{s['images']:>8}{s['captions']:>10}{s['distinct_captions']:>10}{per_image:>23}{words:>24}{s['vocabulary']:>7}"
        )
    lines.append("")
    for split, s in stats["splits"].items():
        if not s["images"]:
            continue
        sizes = list(s["image_sizes"].items())
        shown = ", ".join(f"{k} ({v})" for k, v in sizes[:4]) + (
            f", ... {len(sizes) - 4} more sizes" if len(sizes) > 4 else ""
        )
        modes = ", ".join(f"{k} ({v})" for k, v in s["image_modes"].items())
        lines.append(f"{split}: image sizes {shown}; modes {modes}")
    if "problems" in stats:
        lines += _format_problems(stats["problems"])
    return "\n".join(lines)


def contact_sheet(
    split: Any, out: str | Path, *, n: int = 16, columns: int = 4, thumb: int = 192, seed: int = 0
) -> Path:
    """Write a PNG grid of ``n`` sample images of a split with their first caption underneath."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from ..processing_msa import to_float_rgb  # one rule for 16-bit / float / palette images

    n = min(n, len(split))
    if n == 0:
        raise ValueError("the split is empty: nothing to draw.")
    picks = sorted(np.random.default_rng(seed).choice(len(split), n, replace=False).tolist())
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    text_h = 46
    rows = -(-n // columns)
    sheet = Image.new("RGB", (columns * (thumb + 8) + 8, rows * (thumb + text_h + 8) + 8), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    max_chars = max(10, thumb // 7)
    for k, index in enumerate(picks):
        row = split[int(index)]
        rgb = (to_float_rgb(row["image"]) * 255).round().astype("uint8")
        image = Image.fromarray(rgb).resize((thumb, thumb), Image.BILINEAR)
        x = 8 + (k % columns) * (thumb + 8)
        y = 8 + (k // columns) * (thumb + text_h + 8)
        sheet.paste(image, (x, y))
        caption = row["captions"][0] if row["captions"] else "(no caption)"
        words, lines, line = caption.split(), [], ""
        for word in words:
            if len(line) + len(word) + 1 > max_chars and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        if len(lines) > 3:
            lines = lines[:3]
            lines[-1] = lines[-1][: max_chars - 3] + "..."
        draw.text((x, y + thumb + 2), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def _parse_columns(items: Sequence[str]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--column expects KEY=COLUMN (e.g. captions=sentences), got {item!r}.")
        key, value = item.split("=", 1)
        mapping[key] = value.split(",") if "," in value else value
    return mapping


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import generate_synth_corpus

    start = time.perf_counter()
    path = generate_synth_corpus(
        args.out,
        n_images=args.n_images,
        seed=args.seed,
        image_size=args.image_size,
        variants_per_layout=args.variants_per_layout,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    meta = json.loads(path.read_text(encoding="utf-8"))
    splits = Counter(entry["split"] for entry in meta["images"])
    print(f"wrote {path} ({args.n_images} images, {dict(splits)}) in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _refuse(report: Any, listed: str = "listed above") -> UsageError:
    """Print a validation report and return the one-line error that ends the command."""
    if listed == "listed above":
        print(report.format(max_examples=20), file=sys.stderr)
    allow = (
        "; pass --allow-outside-root if images outside the corpus folder are there on purpose"
        if "outside_root" in report.counts()
        else ""
    )
    return UsageError(
        f"{len(report.bad_indices)} of {report.n_images} images in {report.source} have problems ({listed}){allow}."
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .corpus import corpus_info, load_corpus
    from .validation import CorpusValidationError

    try:
        corpus = load_corpus(
            args.source,
            image_root=args.image_root,
            columns=_parse_columns(args.column),
            seed=args.seed,
            validation_fraction=args.validation_fraction,
            on_bad="error" if args.strict else "drop",
            progress=not args.no_progress,
            allow_outside_root=args.allow_outside_root,
        )
    except CorpusValidationError as error:
        raise _refuse(error.report) from None
    stats = corpus_statistics(corpus, progress=not args.no_progress)
    stats["provenance"] = corpus_info(corpus)
    first = next(iter(stats["provenance"].values()))
    stats["problems"] = {"dropped_images": first["dropped_images"], "counts": first["problems"]}
    if args.json:
        print(json.dumps(stats, indent=1))
    else:
        print(_format_statistics(str(args.source), stats))
        for split, info in stats["provenance"].items():
            if info["derived_from_train"]:
                print(f"{split}: derived from train: {info['derived_from_train']}")
            if info["empty_because"]:
                print(f"{split}: empty: {info['empty_because']}")
    if args.sheet:
        out = contact_sheet(corpus[args.sheet_split], args.sheet, n=args.sheet_n, seed=args.seed)
        print(f"wrote contact sheet {out}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from .corpus import validate_corpus

    report = validate_corpus(
        args.source,
        image_root=args.image_root,
        columns=_parse_columns(args.column),
        check_images=not args.no_decode,
        progress=not args.no_progress,
        allow_outside_root=args.allow_outside_root,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    elif report.ok:
        print(report.format())
    if not report.ok:
        raise _refuse(report, "in the JSON above" if args.json else "listed above")
    return EXIT_OK


def _cmd_shard(args: argparse.Namespace) -> int:
    from .shard import SHARD_MANIFEST, shard_corpus

    start = time.perf_counter()
    manifest = shard_corpus(
        args.source,
        args.out,
        shard_size=args.shard_size,
        num_proc=args.num_proc,
        image_root=args.image_root,
        columns=_parse_columns(args.column),
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        allow_outside_root=args.allow_outside_root,
        progress=not args.no_progress,
    )
    for bad in manifest["bad"][:20]:
        print(f"left out {bad['file_name']}: {bad['kind']} ({bad['detail']})", file=sys.stderr)
    if len(manifest["bad"]) > 20:
        print(f"... and {len(manifest['bad']) - 20} more, listed in {SHARD_MANIFEST}", file=sys.stderr)
    counts = ", ".join(
        f"{split} {s['images']} images / {s['shards']} shards" for split, s in manifest["splits"].items()
    )
    print(
        f"wrote {Path(args.out) / 'data'} ({counts}; {len(manifest['bad'])} left out) and "
        f"{Path(args.out) / SHARD_MANIFEST} in {time.perf_counter() - start:.1f} s"
    )
    return EXIT_OK


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirection and capture work)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        type=path_or_hub_id("a Karpathy JSON, a corpus folder, an imagefolder, a save_to_disk folder or a Hub id"),
        help="Karpathy JSON, corpus folder, imagefolder, save_to_disk folder or Hub id",
    )
    parser.add_argument(
        "--image-root", default=None, help="where image paths are resolved (default: the corpus's folder)"
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY=COLUMN",
        help="column mapping for tabular sources, e.g. captions=sentences (repeatable)",
    )
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths that resolve outside the corpus folder (e.g. a shared image store); "
        "by default they are a problem",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msa-data", description="RS caption corpora for msa_hf.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate the rs-synth multi-scale aerial caption corpus")
    synth.add_argument("--out", required=True, help="output folder (Karpathy JSON + images/)")
    synth.add_argument("--n-images", type=int, default=1000, help="number of images (default 1000)")
    synth.add_argument(
        "--seed", type=int, default=0, help="random seed: the same seed gives byte-identical files (default 0)"
    )
    synth.add_argument("--image-size", type=int, default=224, help="side of the square images in pixels (default 224)")
    synth.add_argument(
        "--variants-per-layout",
        type=int,
        default=4,
        help="scenes sharing one large layout and differing only in small objects",
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synth output in --out (a folder holding other files is refused)",
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    inspect = sub.add_parser(
        "inspect",
        help="statistics (and a contact sheet) of a caption corpus; entries with problems are left out and counted",
    )
    _source_arguments(inspect)
    inspect.add_argument("--seed", type=int, default=0, help="seed for derived splits and the sheet's samples")
    inspect.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of train carved out for a split the corpus lacks (default 0.1)",
    )
    inspect.add_argument(
        "--strict", action="store_true", help="fail (exit 2) on bad entries instead of leaving them out"
    )
    inspect.add_argument("--json", action="store_true", help="print the statistics as JSON")
    inspect.add_argument("--sheet", default=None, metavar="OUT.png", help="write a contact sheet of sample images")
    inspect.add_argument("--sheet-n", type=int, default=16, help="images on the contact sheet (default 16)")
    inspect.add_argument(
        "--sheet-split",
        default="test",
        choices=["train", "validation", "test"],
        help="split the contact sheet samples (default test)",
    )
    inspect.set_defaults(func=_cmd_inspect)

    validate = sub.add_parser(
        "validate", help="check every entry of a caption corpus; exit 2 and list the problems if there are any"
    )
    _source_arguments(validate)
    validate.add_argument(
        "--no-decode", action="store_true", help="only check that image files exist (faster than decoding each)"
    )
    validate.add_argument("--json", action="store_true", help="print the report as JSON (every problem)")
    validate.set_defaults(func=_cmd_validate)

    shard = sub.add_parser(
        "shard",
        help="write a corpus as Parquet shards that datasets streams (images checked, bad ones left out; resumable)",
    )
    _source_arguments(shard)
    shard.add_argument("out", help="output folder: data/{split}-NNNNN-of-NNNNN.parquet and shards.json")
    shard.add_argument(
        "--shard-size", type=positive_int("--shard-size"), default=1000, help="images per shard (default 1000)"
    )
    shard.add_argument(
        "--num-proc", type=positive_int("--num-proc"), default=1, help="processes writing shards (default 1)"
    )
    shard.add_argument("--seed", type=int, default=0, help="seed for splits carved out of train (default 0)")
    shard.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of train carved out for a split the corpus lacks (default 0.1)",
    )
    shard.set_defaults(func=_cmd_shard)
    return parser


def _show_package_logs() -> None:
    """Show this package's reports (drops, derived splits) on stderr without other libraries' chatter."""
    log = logging.getLogger("msa_hf.data")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``msa-data``; exit codes as in :mod:`msa_hf.cli_utils`."""
    _show_package_logs()
    return run_command("msa-data", lambda args: args.func(args), build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
