"""One convention for every ``msa-*`` command (and ``training/train.py``), checked in one table.

Each row runs a command in-process through its ``main(argv)`` (what the console script
calls) and checks the exit code (0 ok, 2 bad usage or input, 1 runtime failure, 3 a stale
index) and that a failure prints exactly one ``prog: error: ...`` line and no traceback.
A second test walks every parser and requires help text on every argument.
"""

from __future__ import annotations

import argparse
import errno
import json
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from msa_hf.app import cli as app_cli
from msa_hf.cli_utils import EXIT_FAILURE, EXIT_OK, EXIT_STALE, EXIT_USAGE
from msa_hf.convert_original import main as convert_main
from msa_hf.data import generate_synth_corpus
from msa_hf.data.cli import main as data_main
from msa_hf.hub import main as push_main
from msa_hf.retrieval import cli as retrieval_cli

try:
    from msa_hf_train import cli as train_cli
except ImportError:  # training/train.py needs the [train] extra (accelerate)
    train_cli = None
DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "training" / "configs" / "default.yaml"

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train.py": lambda argv: train_cli.main(argv, default_recipe=DEFAULT_RECIPE),
    "msa-data": data_main,
    "msa-convert-original": convert_main,
    "msa-eval": retrieval_cli.eval_main,
    "msa-index": retrieval_cli.index_main,
    "msa-search": retrieval_cli.search_main,
    "msa-classify": retrieval_cli.classify_main,
    "msa-push": push_main,
    "msa-app": app_cli.main,
}


def _no_space_left(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    """Corpora, an image folder, an index of it, broken inputs and a busy port, shared by the rows."""
    root = tmp_path_factory.mktemp("cli")
    corpus = generate_synth_corpus(root / "corpus", n_images=8, image_size=32).parent
    bad_corpus = root / "bad-corpus"
    shutil.copytree(corpus, bad_corpus)
    meta_path = bad_corpus / "dataset_rs_synth.json"
    meta = json.loads(meta_path.read_text())
    meta["images"][0]["sentences"] = None
    meta_path.write_text(json.dumps(meta))
    test_only = root / "test-only"
    shutil.copytree(corpus, test_only)
    meta = json.loads((test_only / "dataset_rs_synth.json").read_text())
    meta["images"] = [dict(entry, split="test") for entry in meta["images"][:4]]
    (test_only / "dataset_rs_synth.json").write_text(json.dumps(meta))
    images = root / "images"
    images.mkdir()
    for k, path in enumerate(sorted((corpus / "images").iterdir())[:4]):
        (images / ("airport" if k % 2 else "farmland")).mkdir(exist_ok=True)
        shutil.copy(path, images / ("airport" if k % 2 else "farmland") / path.name)
    broken_model = root / "broken-model"
    shutil.copytree(tiny_model_dir, broken_model)
    (broken_model / "model.safetensors").write_bytes(b"truncated")
    index = root / "index"
    assert (
        retrieval_cli.index_main(
            ["build", str(images), "--model", str(tiny_model_dir), "--out", str(index), "--no-progress"]
        )
        == EXIT_OK
    )
    stale_images = root / "stale-images"
    shutil.copytree(images, stale_images)
    stale_index = root / "stale-index"
    assert (
        retrieval_cli.index_main(
            ["build", str(stale_images), "--model", str(tiny_model_dir), "--out", str(stale_index), "--no-progress"]
        )
        == EXIT_OK
    )
    Image.new("RGB", (32, 32)).save(stale_images / "new.png")
    not_index = root / "not-index"  # a folder of user files given where an index is expected
    not_index.mkdir()
    (not_index / "notes.txt").write_text("mine")
    undecodable = root / "undecodable"
    undecodable.mkdir()
    (undecodable / "x.png").write_bytes(b"not a png")
    moved_images = root / "moved-images"  # indexed, then moved away: the index names a folder that is gone
    shutil.copytree(images, moved_images)
    moved_index = root / "moved-index"
    assert (
        retrieval_cli.index_main(
            ["build", str(moved_images), "--model", str(tiny_model_dir), "--out", str(moved_index), "--no-progress"]
        )
        == EXIT_OK
    )
    moved_images.rename(root / "moved-images-now")
    push_model = root / "push-model"  # msa-push --write-card writes a card into it
    shutil.copytree(tiny_model_dir, push_model)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield {
        "root": root,
        "corpus": corpus,
        "bad_corpus": bad_corpus,
        "test_only": test_only,
        "images": images,
        "model": tiny_model_dir,
        "broken_model": broken_model,
        "index": index,
        "stale_index": stale_index,
        "not_index": not_index,
        "undecodable": undecodable,
        "moved_index": moved_index,
        "moved_now": root / "moved-images-now",
        "push_model": push_model,
        "busy_port": busy.getsockname()[1],
        "free_port": _free_port(),
    }
    busy.close()


def _serve_nothing(monkeypatch) -> None:
    """msa-app builds everything it serves, but its web server is not started."""
    pytest.importorskip("gradio", reason="msa-app needs gradio (extra `app`)")
    monkeypatch.setattr("msa_hf.app.ui.launch", lambda demo, service, host, port: None)


def _disk_full(monkeypatch) -> None:
    monkeypatch.setattr(Image.Image, "save", _no_space_left)


def _index_disk_full(monkeypatch) -> None:
    monkeypatch.setattr("msa_hf.retrieval.index_build.atomic_save_safetensors", _no_space_left)


def _json_disk_full(monkeypatch) -> None:
    monkeypatch.setattr("msa_hf.io_utils.atomic_write_json", _no_space_left)


SETUPS = {
    "disk-full": _disk_full,
    "index-disk-full": _index_disk_full,
    "json-disk-full": _json_disk_full,
    "no-server": _serve_nothing,
}


# (command, arguments with {placeholders} from the workspace, exit code, text the one error line holds,
#  optional setup(monkeypatch) that provokes a runtime failure)
TABLE = [
    ("msa-data", ["synth", "--out", "{root}/synth-ok", "--n-images", "4", "--image-size", "16", "--quiet"], 0, None),
    ("msa-data", ["synth", "--n-images", "4"], 2, "--out"),
    ("msa-data", ["synth", "--out", "{root}/s0", "--n-images", "0", "--quiet"], 2, "n_images must be >= 1"),
    ("msa-data", ["synth", "--out", "{root}/s-full", "--n-images", "4", "--quiet"], 1, "No space left", "disk-full"),
    ("msa-data", ["inspect", "{corpus}", "--no-progress"], 0, None),
    ("msa-data", ["inspect", "{root}/nope.json"], 2, "does not exist"),
    ("msa-data", ["inspect", "{bad_corpus}", "--strict", "--no-progress"], 2, "have problems"),
    ("msa-data", ["validate", "{corpus}", "--no-progress"], 0, None),
    ("msa-data", ["validate", "{bad_corpus}", "--no-progress"], 2, "have problems"),
    ("msa-data", ["frobnicate"], 2, "invalid choice"),
    ("msa-data", ["shard", "{corpus}", "{root}/shards", "--no-progress"], 0, None),
    ("msa-data", ["shard", "{root}/nope.json", "{root}/shards-x", "--no-progress"], 2, "does not exist"),
    ("msa-convert-original", ["--img-model", "{root}"], 2, "the following arguments are required"),
    (
        "msa-convert-original",
        [
            *("--img-model", "{root}/no.pth", "--img-map", "{root}/no.pth", "--text-model", "{root}/no.pth"),
            *("--crossatt", "{root}/no.pth", "--text-config", "{root}/no", "--out", "{root}/converted"),
        ],
        2,
        "no.pth",
    ),
    (
        "msa-eval",
        ["--model", "{model}", "--corpus", "{corpus}", "--output-dir", "{root}/eval", "--no-progress"],
        0,
        None,
    ),
    (
        "msa-eval",
        ["--model", "{model}", "--corpus", "{test_only}", "--output-dir", "{root}/eval-t", "--no-progress"],
        0,
        None,
    ),
    (
        "msa-eval",
        ["--model", "{model}", "--corpus", "{corpus}", "--output-dir", "{root}/eval-f", "--no-progress"],
        1,
        "No space left",
        "json-disk-full",
    ),
    ("msa-eval", ["--model", "{model}"], 2, "--corpus"),
    ("msa-eval", ["--model", "{model}", "--corpus", "{root}/missing"], 2, "does not exist"),
    ("msa-eval", ["--model", "{model}", "--corpus", "{bad_corpus}"], 2, "have problems"),
    ("msa-eval", ["--model", "{broken_model}", "--corpus", "{corpus}", "--no-progress"], 2, "Could not load"),
    ("msa-index", ["status", "{index}"], 0, None),
    ("msa-index", ["status", "{stale_index}"], 3, None),
    ("msa-index", ["info", "{root}/no-index"], 2, "does not exist"),
    ("msa-index", ["info", "{not_index}"], 2, "is not an MSA image index"),
    ("msa-index", ["status", "{moved_index}"], 2, "no longer exists"),
    ("msa-index", ["build", "{moved_now}", "--model", "{model}", "--out", "{moved_index}"], 2, "pass --relocate"),
    ("msa-index", ["build", "{undecodable}", "--model", "{model}", "--out", "{root}/u", "--no-progress"], 2, "None of"),
    ("msa-index", ["build", "{root}/no-folder", "--model", "{model}", "--out", "{root}/i"], 2, "does not exist"),
    ("msa-index", ["build", "{images}", "--model", "{broken_model}", "--out", "{root}/i2"], 2, "Could not load"),
    ("msa-index", ["rebuild"], 2, "invalid choice"),
    (
        "msa-index",
        ["build", "{images}", "--model", "{model}", "--out", "{root}/i-full", "--no-progress"],
        1,
        "No space left",
        "index-disk-full",
    ),
    ("msa-search", ["{index}", "a plane", "-k", "2"], 0, None),
    ("msa-search", ["{index}"], 2, "give a text QUERY"),
    ("msa-search", ["{index}", "x", "-k", "zero"], 2, "-k must be an integer"),
    ("msa-search", ["{index}", "a plane", "--model", "{broken_model}"], 2, "Could not load"),
    ("msa-search", ["{not_index}", "a plane"], 2, "is not an MSA image index"),
    ("msa-classify", ["{images}", "--model", "{model}", "--no-progress"], 0, None),
    ("msa-classify", ["{root}/no-folder", "--model", "{model}"], 2, "does not exist"),
    ("msa-classify", ["{images}", "--model", "{broken_model}"], 2, "Could not load"),
    (
        "msa-classify",
        ["{undecodable}", "--model", "{model}", "--labels", "a,b", "--no-progress"],
        2,
        "could be decoded",
    ),
    ("msa-classify", ["{images}", "--model", "{model}", "--scale", "nan"], 2, "--scale"),
    ("msa-classify", ["{images}", "--model", "{model}", "--labels", "a", "--labels-file", "{root}"], 2, "not both"),
    ("msa-push", ["{push_model}", "--repo-id", "user/x", "--dry-run", "--write-card"], 0, None),
    ("msa-push", ["{root}/no-folder", "--repo-id", "user/x", "--dry-run"], 2, "does not exist"),
    ("msa-push", ["{model}", "--repo-id", "not a/valid/id"], 2, "is not a Hub id"),
    ("msa-push", ["{broken_model}", "--repo-id", "user/x", "--dry-run"], 2, "would not load"),
    ("msa-app", ["--model", "{model}", "--index", "{index}", "--port", "{free_port}"], 0, None, "no-server"),
    ("msa-app", ["--index", "{index}"], 2, "--model is required"),
    ("msa-app", ["--model", "{model}", "--index", "{index}", "--port", "99999"], 2, "--port must be from 1 to 65535"),
    ("msa-app", ["--model", "{model}", "--index", "{index}", "--port", "{busy_port}"], 1, "cannot serve on"),
    ("train.py", ["{root}/no-recipe.yaml"], 2, "no-recipe.yaml does not exist"),
    ("train.py", ["no_such_key=3"], 2, "Unknown recipe key 'no_such_key'"),
    ("train.py", ["--frob"], 2, "unrecognized arguments"),
]


@pytest.mark.parametrize("row", TABLE, ids=[f"{row[0]}-{i}" for i, row in enumerate(TABLE)])
def test_exit_codes_and_one_line_errors(row, workspace, monkeypatch, capsys) -> None:
    prog, argv, code, message = row[:4]
    if prog == "train.py" and train_cli is None:
        pytest.skip("training/train.py needs the [train] extra (accelerate)")
    for setup in row[4:]:
        SETUPS[setup](monkeypatch)
    for name in ("MSA_APP_MODEL", "MSA_APP_INDEX", "MSA_APP_IMAGES", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)  # msa-app reads its defaults from these
    argv = [part.format(**workspace) for part in argv]
    assert COMMANDS[prog](argv) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith(prog) and ": error:" in line]
    if code in (EXIT_OK, EXIT_STALE):
        assert errors == [], err
    else:
        assert len(errors) == 1, err
        assert message in errors[0], errors[0]


def test_the_table_covers_every_command_and_outcome() -> None:
    outcomes = {(row[0], row[2]) for row in TABLE}
    for prog in COMMANDS:
        assert (prog, EXIT_USAGE) in outcomes, prog
        if prog not in ("msa-convert-original", "train.py"):  # original checkpoints / minutes of training
            assert (prog, EXIT_OK) in outcomes, prog
    for prog in ("msa-data", "msa-eval", "msa-index", "msa-app"):
        assert (prog, EXIT_FAILURE) in outcomes, prog
    assert ("msa-index", EXIT_STALE) in outcomes


def test_bad_input_is_exit_2_in_every_command() -> None:
    """One rule: a model that does not load, a folder that is not an index, an index of a folder
    that moved, a folder where nothing decodes are the user's input, not a runtime failure."""
    bad_inputs = ("broken_model", "not_index", "moved_index", "moved_now", "undecodable")
    rows = [row for row in TABLE if any("{" + name + "}" in arg for arg in row[1] for name in bad_inputs)]
    assert {row[0] for row in rows} >= {"msa-eval", "msa-index", "msa-search", "msa-classify", "msa-push"}
    assert {row[2] for row in rows} == {EXIT_USAGE}


def _parsers(prog: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The command's parser and its sub-command parsers, captured from ``main(["--help"])``."""
    captured: list[argparse.ArgumentParser] = []

    def capture(name, body, parser, argv=None, expected=()):
        captured.append(parser)
        return 0

    monkeypatch.setattr(retrieval_cli, "run_command", capture)
    monkeypatch.setattr("msa_hf.data.cli.run_command", capture)
    monkeypatch.setattr("msa_hf.convert_original.run_command", capture)
    monkeypatch.setattr("msa_hf.hub.run_command", capture)
    monkeypatch.setattr(app_cli, "run_command", capture)
    if train_cli is not None:
        monkeypatch.setattr(train_cli, "run_command", capture)
    COMMANDS[prog](["--help"])
    parsers, todo = [], list(captured)
    while todo:
        parser = todo.pop()
        parsers.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return parsers


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_every_argument_has_help(prog, monkeypatch) -> None:
    if prog == "train.py" and train_cli is None:
        pytest.skip("training/train.py needs the [train] extra (accelerate)")
    missing = [
        f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        for parser in _parsers(prog, monkeypatch)
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help
    ]
    assert missing == []
