"""Sharing MSA checkpoints on the Hugging Face Hub: check a folder, push it, resolve Hub ids.

A pushed folder is only useful if it loads for whoever downloads it, so :func:`push_to_hub`
first checks the folder piece by piece (config, safetensors weights, processor, tokenizer,
remote-code files, model card) and then loads it with the package, refusing it with every
missing piece named. Failures of the Hub itself (no network, a bad token, an HTTP 4xx/5xx)
become one :class:`~msa_hf.sources.HubError` line; the local folder is never written to.

Reading from the Hub (a Hub id at a revision resolved to a cached folder, offline too) is
:mod:`msa_hf.sources`'s job; this module only writes to it.

Command line::

    msa-push outputs/run/best --repo-id user/msa-rsicd [--private] [--revision BRANCH] \\
        [--commit-message MSG] [--dry-run] [--write-card]
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cli_utils import EXIT_OK, UsageError, existing_path, run_command
from .sources import HubError, ModelLoadError, describe_hub_error

# huggingface_hub is imported inside the functions that use it: `msa-push --help` answers at once.

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
CARD_FILE = "README.md"
# Never uploaded: caches and editor/OS leftovers (hidden names are skipped as well).
SKIPPED_NAMES = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


class FolderCheckError(UsageError):
    """A folder that would not load once pushed; the message names every missing piece (exit code 2)."""


@dataclass(frozen=True)
class FolderFile:
    """One file a push uploads: its path inside the repo (POSIX) and its size in bytes."""

    path: str
    size: int


@dataclass
class PushResult:
    """What :func:`push_to_hub` did: the repo URL, the commit URL (``None`` on a dry run) and the files."""

    repo_url: str
    commit_url: str | None
    files: list[FolderFile] = field(default_factory=list)
    dry_run: bool = False


def format_size(size: int) -> str:
    """Bytes in the largest binary unit that keeps the number ≥ 1 (``1.5 MiB``).

    ```python
    >>> format_size(512), format_size(1536), format_size(3 * 1024**3)
    ('512 B', '1.5 KiB', '3.0 GiB')
    ```
    """
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def folder_files(folder: str | os.PathLike) -> list[FolderFile]:
    """The files a push of ``folder`` uploads, sorted: everything except hidden names and Python caches."""
    root = Path(folder)
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part in SKIPPED_NAMES for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in SKIPPED_SUFFIXES:
            files.append(FolderFile(relative.as_posix(), path.stat().st_size))
    return files


def _read_json(path: Path, missing: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        missing.append(f"a readable {path.name} ({type(error).__name__}: {error})")
        return None
    if not isinstance(data, dict):
        missing.append(f"a JSON object in {path.name} (found {type(data).__name__})")
        return None
    return data


def _relative_imports(source: Path) -> set[str]:
    """Modules a model file imports relatively (``from .x import y``, ``from . import x``)."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update([node.module] if node.module else [alias.name for alias in node.names])
    return {name.split(".")[0] for name in names}


def _remote_code_gaps(folder: Path, auto_maps: Sequence[dict]) -> list[str]:
    """Remote-code files named by ``auto_map`` entries, and the files they import, that are absent."""
    modules: dict[str, str] = {}
    for auto_map in auto_maps:
        for reference in auto_map.values():
            for ref in reference if isinstance(reference, list) else [reference]:
                if isinstance(ref, str) and "--" not in ref:  # "repo--module.Class" points at another repo
                    modules.setdefault(ref.rsplit(".", 1)[0], f"auto_map {ref}")
    gaps, seen = [], set()
    queue = list(modules.items())
    while queue:
        module, needed_by = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        path = folder / f"{module}.py"
        if not path.is_file():
            gaps.append(f"remote-code file {module}.py (needed by {needed_by})")
            continue
        try:
            imports = _relative_imports(path)
        except SyntaxError as error:
            gaps.append(f"a remote-code file {path.name} that parses (line {error.lineno}: {error.msg})")
            continue
        queue.extend((name, path.name) for name in imports)
    return gaps


def missing_pieces(folder: str | os.PathLike) -> list[str]:
    """What ``folder`` lacks to load from the Hub, with and without ``msa_hf`` installed; empty if nothing.

    Checked by file: ``config.json`` (an MSA config with an ``auto_map`` for ``AutoConfig`` and
    ``AutoModel``), safetensors weights (one file, or an index with all its shards), the
    processor config (with ``AutoProcessor`` in an ``auto_map``), the tokenizer, every
    remote-code file the ``auto_map`` entries name and the files they import, and a model card
    (``README.md`` with metadata).
    """
    from huggingface_hub import ModelCard

    from .pretrained_towers import TOKENIZER_FILES  # torch and timm: loaded for a check, not for --help

    folder = Path(folder)
    missing: list[str] = []
    auto_maps: list[dict] = []
    config_path = folder / "config.json"
    if not config_path.is_file():
        missing.append("config.json (write it with model.save_pretrained(DIR))")
    elif (config := _read_json(config_path, missing)) is not None:
        if config.get("model_type") != "msa":
            missing.append(f"an MSA config.json (its model_type is {config.get('model_type')!r}, not 'msa')")
        auto_map = config.get("auto_map") or {}
        absent = [key for key in ("AutoConfig", "AutoModel") if key not in auto_map]
        if absent:
            missing.append(
                f"auto_map entries {absent} in config.json (re-save with msa_hf imported: it registers them)"
            )
        auto_maps.append(auto_map)

    index_path = folder / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        index = _read_json(index_path, missing) or {}
        shards = sorted(set((index.get("weight_map") or {}).values()))
        absent_shards = [shard for shard in shards if not (folder / shard).is_file()]
        if not shards or absent_shards:
            missing.append(f"the weight shards listed in {WEIGHTS_INDEX_FILE}: {absent_shards or 'none listed'}")
    elif not (folder / WEIGHTS_FILE).is_file():
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (found {pickled}: re-save with model.save_pretrained, which writes safetensors)" if pickled else ""
        missing.append(f"weights {WEIGHTS_FILE}{hint}")

    processor_configs = [folder / name for name in PROCESSOR_FILES if (folder / name).is_file()]
    if not processor_configs:
        missing.append(
            f"processor config ({' or '.join(PROCESSOR_FILES)}; write it with processor.save_pretrained(DIR))"
        )
    else:
        processor_maps = [(_read_json(path, missing) or {}).get("auto_map") or {} for path in processor_configs]
        if not any("AutoProcessor" in auto_map for auto_map in processor_maps):
            missing.append("an AutoProcessor auto_map entry in the processor config (re-save it with msa_hf imported)")
        auto_maps.extend(processor_maps)

    if not (folder / "tokenizer_config.json").is_file():
        missing.append("tokenizer_config.json (write it with processor.save_pretrained(DIR))")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer vocabulary (one of {', '.join(TOKENIZER_FILES)})")

    missing.extend(_remote_code_gaps(folder, auto_maps))

    card_path = folder / CARD_FILE
    if not card_path.is_file():
        missing.append(f"a model card {CARD_FILE} (msa-push --write-card writes one from the folder)")
    else:
        try:
            card = ModelCard.load(card_path)
        except Exception as error:  # huggingface_hub raises ValueError or yaml errors for bad metadata
            missing.append(f"a model card whose metadata parses ({type(error).__name__}: {error})")
        else:
            if not card.data.to_dict():
                missing.append(f"metadata (a YAML header) in {CARD_FILE} (msa_hf.model_card builds complete cards)")
    return missing


def check_folder(folder: str | os.PathLike) -> list[FolderFile]:
    """Refuse a folder that would not load once pushed; return the files a push would upload.

    Runs :func:`missing_pieces`, then loads config, model and processor with ``msa_hf`` (on the
    CPU), so a folder whose files exist but do not fit together is refused as well.

    Raises:
        FolderCheckError: naming every missing piece, or why loading failed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderCheckError(f"{folder} is not a folder: pass the folder written by save_pretrained.")
    missing = missing_pieces(folder)
    if missing:
        raise FolderCheckError(f"{folder} would not load from the Hub; missing: " + "; ".join(missing) + ".")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the check's own loading notes are noise; its verdict is the message
    from .factory import create_model_and_processor  # torch and transformers: loaded for a check, not for --help

    try:
        create_model_and_processor(folder)
    except ModelLoadError as error:
        raise FolderCheckError(f"{folder} would not load from the Hub: {error}") from error
    finally:
        hf_logging.set_verbosity(verbosity)
    return folder_files(folder)


def validate_hub_id(repo_id: str, argument: str = "repo_id") -> str:
    """``repo_id`` if it is a valid Hub model id (``user/name`` or ``name``), else a :class:`UsageError`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UsageError(
            f"{argument} {repo_id!r} is not a Hub id: use 'user/name' (letters, digits, '-', '_', '.'). ({error})"
        ) from error
    return repo_id


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
) -> PushResult:
    """Check ``folder`` and upload it to the model repo ``repo_id`` (created if needed).

    ``revision`` is a branch, created from ``main`` if it does not exist. ``token`` defaults to
    the logged-in token or ``HF_TOKEN``; ``private`` applies when the repo is created. With
    ``dry_run`` nothing is sent: the result lists exactly the files an upload would send.
    The local folder is only read.

    Raises:
        FolderCheckError: the folder would not load (every missing piece named).
        UsageError: ``repo_id`` is not a Hub id.
        HubError: the Hub was unreachable or refused or failed the upload (one line: which and why).

    ```python
    >>> push_to_hub("outputs/run/best", "user/msa-rsicd", dry_run=True).files  # doctest: +SKIP
    [FolderFile(path='README.md', size=4120), FolderFile(path='config.json', size=1869), ...]
    ```
    """
    from huggingface_hub import HfApi, constants

    validate_hub_id(repo_id, "repo_id")
    files = check_folder(folder)
    branch = revision or "main"
    planned_url = f"{constants.ENDPOINT}/{repo_id}" + (f"/tree/{revision}" if revision else "")
    if dry_run:
        return PushResult(repo_url=planned_url, commit_url=None, files=files, dry_run=True)
    api = HfApi(token=token)
    message = commit_message or f"Upload MSA model from {Path(folder).name}"
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as error:  # any failure of the Hub call becomes one line (see describe_hub_error)
        raise HubError(describe_hub_error(error, f"create the repo {repo_id}")) from error
    try:
        if revision:
            api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_url.repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=message,
            allow_patterns=[glob.escape(f.path) for f in files],
        )
    except Exception as error:
        raise HubError(describe_hub_error(error, f"upload {folder} to {repo_id}@{branch}")) from error
    logger.info("Pushed %d files from %s to %s", len(files), folder, commit.commit_url)
    return PushResult(repo_url=str(repo_url), commit_url=commit.commit_url, files=files, dry_run=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msa-push",
        description="Check a saved MSA folder and upload it to the Hugging Face Hub (created if needed).",
    )
    parser.add_argument(
        "folder",
        metavar="DIR",
        type=existing_path("the folder written by save_pretrained"),
        help="folder written by save_pretrained (model + processor + card)",
    )
    parser.add_argument("--repo-id", required=True, help="model repo on the Hub, 'user/name'")
    parser.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    parser.add_argument("--revision", default=None, metavar="BRANCH", help="branch to push to (created if needed)")
    parser.add_argument(
        "--commit-message",
        default=None,
        metavar="MSG",
        help="message of the Hub commit (default: 'Upload MSA model from <folder name>')",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, with sizes, and stop")
    parser.add_argument(
        "--write-card",
        action="store_true",
        help=f"first write a model card {CARD_FILE} into DIR from its contents, if it has none (also with --dry-run)",
    )
    return parser


def _push(args: argparse.Namespace) -> int:
    from .model_card import card_from_folder, write_card  # huggingface_hub and yaml: not for --help

    folder = Path(args.folder)
    validate_hub_id(args.repo_id, "--repo-id")
    if args.write_card:
        card_path = folder / CARD_FILE
        if card_path.exists():
            print(f"{card_path} exists; keeping it (delete it to have --write-card regenerate it)")
        elif folder.is_dir():
            write_card(card_from_folder(folder, repo_id=args.repo_id), folder)
            print(f"wrote {card_path} (generated from the folder; edit it before pushing if you like)")
    result = push_to_hub(
        folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
    )
    total = sum(f.size for f in result.files)
    if result.dry_run:
        width = max(len(format_size(f.size)) for f in result.files)
        for f in result.files:
            print(f"{format_size(f.size):>{width}}  {f.path}")
        print(f"dry run: would upload {len(result.files)} files ({format_size(total)}) to {result.repo_url}")
        return EXIT_OK
    print(f"pushed {len(result.files)} files ({format_size(total)}) to {result.repo_url}")
    print(f"commit: {result.commit_url}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``msa-push DIR --repo-id user/name [--private] [--revision B] [--commit-message M] [--dry-run]``."""
    return run_command("msa-push", _push, build_parser(), argv, expected=(HubError,))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CARD_FILE",
    "FolderCheckError",
    "FolderFile",
    "PushResult",
    "check_folder",
    "folder_files",
    "format_size",
    "main",
    "missing_pieces",
    "push_to_hub",
    "validate_hub_id",
]
