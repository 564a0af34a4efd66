"""Corpus validation: find bad entries before training does, and report them clearly.

Why: a missing or truncated image surfaces hours into training as a crash in a data-loader
worker, an empty caption silently becomes a ``[CLS] [SEP]`` training pair, a duplicated
file leaks between splits, and an image with a stray sixth caption breaks the fixed
"5 captions per image" evaluation protocol. All of these are cheap to find up front.

Images are checked by actually decoding them (JPEGs at 1/8 scale through PIL's ``draft``,
which still reads every byte of entropy-coded data): opening a header, or PIL's
``verify()``, accepts truncated JPEG and TIFF files.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["Problem", "ValidationReport", "CorpusValidationError", "fix_hint", "validate_records", "PROBLEM_KINDS"]

# kind -> what it means, in report order
PROBLEM_KINDS: dict[str, str] = {
    "outside_root": "image path outside the corpus folder",
    "missing_image": "missing image file",
    "unreadable_image": "unreadable image",
    "malformed_captions": "malformed captions",
    "empty_caption": "empty or whitespace-only caption",
    "missing_split": "entry without a split (the other entries have one)",
    "duplicate_file_name": "duplicate file name",
    "caption_count": "unusual number of captions",
}


@dataclass(frozen=True)
class Problem:
    """One problem with one entry (``index`` is the entry's position in the source order)."""

    kind: str
    index: int
    file_name: str
    detail: str


@dataclass
class ValidationReport:
    """What is wrong with a corpus: counts per kind plus the offending entries."""

    source: str
    n_images: int
    expected_captions: int | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_indices(self) -> set[int]:
        """Entries with at least one problem (what ``on_bad="drop"`` removes)."""
        return {p.index for p in self.problems}

    def counts(self) -> dict[str, int]:
        found = Counter(p.kind for p in self.problems)
        return {kind: found[kind] for kind in PROBLEM_KINDS if found[kind]}

    def format(self, max_examples: int = 5) -> str:
        """Human-readable report: one line per problem kind and its first offending entries."""
        if self.ok:
            return f"{self.source}: {self.n_images} images, no problems found."
        lines = [f"{self.source}: {len(self.bad_indices)} of {self.n_images} images have problems:"]
        for kind, n in self.counts().items():
            label = PROBLEM_KINDS[kind]
            if kind == "caption_count":
                label += f" (the corpus's usual count is {self.expected_captions})"
            lines.append(f"  {label}: {n}")
            examples = [p for p in self.problems if p.kind == kind][:max_examples]
            for p in examples:
                lines.append(f"    - {p.file_name}: {p.detail}")
            if n > len(examples):
                lines.append(f"    ... and {n - len(examples)} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready data: counts per kind and every problem."""
        return {
            "source": self.source,
            "images": self.n_images,
            "images_with_problems": len(self.bad_indices),
            "expected_captions": self.expected_captions,
            "counts": self.counts(),
            "problems": [
                {"kind": p.kind, "entry": p.index, "file_name": p.file_name, "detail": p.detail} for p in self.problems
            ],
        }


class CorpusValidationError(ValueError):
    """Raised by ``load_corpus(..., on_bad="error")``; ``.report`` holds the full report.

    ``drop`` and ``allow_outside_root`` say how the caller spells those options (a CLI flag,
    a recipe key), so the advice at the end of the message is one the reader can follow.
    """

    def __init__(
        self,
        report: ValidationReport,
        *,
        drop: str = 'on_bad="drop" to load_corpus',
        allow_outside_root: str = "allow_outside_root=True to load_corpus",
    ) -> None:
        self.report = report
        super().__init__(report.format() + "\n" + fix_hint(report, drop, allow_outside_root))


def fix_hint(report: ValidationReport, drop: str, allow_outside_root: str) -> str:
    """The last line of a refusal: fix the corpus, drop the bad entries, or (for images outside
    the corpus folder) allow them, each spelled as the caller's interface spells it."""
    hint = f"Fix the corpus, or pass {drop} to drop these images (it logs how many)"
    if "outside_root" in report.counts():
        hint += f"; if images outside the corpus folder are there on purpose, pass {allow_outside_root}"
    return hint + "."


def _check_image(image: dict[str, Any], decode: bool = True) -> tuple[str, str] | None:
    """Return ``(kind, detail)`` if the image is missing or (with ``decode``) cannot be decoded."""
    path, data = image.get("path"), image.get("bytes")
    if data is None:
        if not path or not os.path.isfile(path):
            return "missing_image", f"no file at {path}"
        source: Any = path
    else:
        source = io.BytesIO(data)
    if not decode:
        return None
    try:
        with Image.open(source) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except Exception as exc:  # PIL raises several types (OSError, SyntaxError, ValueError, ...)
        return "unreadable_image", f"cannot decode {path or 'embedded bytes'} ({type(exc).__name__}: {exc})"
    return None


def _outside_root(record: dict[str, Any]) -> str | None:
    """Why the record's image file lies outside its corpus folder (after symbolic links), or
    ``None``: a crafted ``"../../secret.jpg"`` must not pull other files into training,
    evaluation pictures or contact sheets."""
    root, image = record.get("image_root"), record["image"]
    if root is None or image.get("bytes") is not None or not image.get("path"):
        return None
    real, real_root = Path(os.path.realpath(image["path"])), Path(os.path.realpath(root))
    if real.is_relative_to(real_root):
        return None
    return f"resolves to {real}, outside the corpus folder {real_root}"


def _usual_count(counts: Iterable[int]) -> int | None:
    tally = Counter(counts)
    if not tally:
        return None
    top = max(tally.values())
    return max(c for c, n in tally.items() if n == top)


def validate_records(
    records: Sequence[dict[str, Any]],
    source: str,
    *,
    check_images: bool = True,
    num_threads: int | None = None,
    progress: bool = False,
    allow_outside_root: bool = False,
) -> ValidationReport:
    """Validate corpus entries ``{"file_name", "image": {"path", "bytes"}, "captions", "split", ...}``.

    Checks, per entry: an entry with an ``image_root`` (the corpus folder of a file-based
    source) has its image file inside that folder after symbolic links are resolved, unless
    ``allow_outside_root`` (such a file is never opened); the image exists and (with
    ``check_images``) decodes; the captions are
    strings (a reader may set ``caption_problem`` to say what is wrong with their structure)
    and none is empty or whitespace; the entry has a split (``None`` marks one that lacks it);
    the file name was not seen before (later duplicates are flagged, the first is kept); the
    caption count equals the corpus's usual (most common) count.
    """
    problems: list[Problem] = []
    outside = {} if allow_outside_root else {i: why for i, r in enumerate(records) if (why := _outside_root(r))}
    problems += [Problem("outside_root", i, records[i]["file_name"], why) for i, why in outside.items()]
    if records:
        threads = num_threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            checks = pool.map(
                lambda i: None if i in outside else _check_image(records[i]["image"], check_images),
                range(len(records)),
                chunksize=64,
            )
            if progress:
                from tqdm.auto import tqdm

                what = "decoding images" if check_images else "finding images"
                checks = tqdm(checks, total=len(records), desc=f"validating ({what})", unit="img", leave=False)
            results = list(checks)
        for i, (record, result) in enumerate(zip(records, results)):
            if result is not None:
                problems.append(Problem(result[0], i, record["file_name"], result[1]))
    malformed: set[int] = set()
    for i, record in enumerate(records):
        detail = record.get("caption_problem")
        if detail is None:
            detail = next(
                (
                    f"caption {k} is a {type(c).__name__} ({c!r:.60}); expected a string"
                    for k, c in enumerate(record["captions"])
                    if not isinstance(c, str)
                ),
                None,
            )
        if detail is not None:
            malformed.add(i)
            problems.append(Problem("malformed_captions", i, record["file_name"], detail))
        if "split" in record and record["split"] is None:
            problems.append(
                Problem(
                    "missing_split", i, record["file_name"], f"entry {i} has no split; it is not assumed to be train"
                )
            )
    for i, record in enumerate(records):
        captions = record["captions"]
        if i in malformed:
            continue
        empty = [k for k, c in enumerate(captions) if not c.strip()]
        if empty:
            which = ", ".join(str(k) for k in empty)
            problems.append(
                Problem(
                    "empty_caption",
                    i,
                    record["file_name"],
                    f"caption(s) {which} of {len(captions)} empty: {[captions[k] for k in empty]!r}",
                )
            )
    first_seen: dict[str, int] = {}
    for i, record in enumerate(records):
        name = record["file_name"]
        if name in first_seen:
            j = first_seen[name]
            problems.append(
                Problem(
                    "duplicate_file_name",
                    i,
                    name,
                    f"entry {i} (split {record.get('split')}) repeats entry {j} (split {records[j].get('split')})",
                )
            )
        else:
            first_seen[name] = i
    expected = _usual_count(len(r["captions"]) for i, r in enumerate(records) if i not in malformed)
    for i, record in enumerate(records):
        n = len(record["captions"])
        if n != expected and i not in malformed:
            problems.append(Problem("caption_count", i, record["file_name"], f"{n} captions, expected {expected}"))
    order = list(PROBLEM_KINDS)
    problems.sort(key=lambda p: (order.index(p.kind), p.index))
    return ValidationReport(source=source, n_images=len(records), expected_captions=expected, problems=problems)
