"""run_command: the exit code of each kind of failure, one error line, warnings, the debug switch; path types."""

from __future__ import annotations

import argparse
import warnings

import pytest

from msa_hf.cli_utils import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    existing_path,
    exit_code_for,
    run_command,
)
from msa_hf.sources import path_or_hub_id


class IndexBroken(Exception):
    """A command's own runtime error type."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msa-demo")
    parser.add_argument("what")
    return parser


ERRORS = {
    "usage": UsageError("--k must be >= 1"),
    "missing": FileNotFoundError("corpus.json does not exist"),
    "value": ValueError("split 'dev' is not in the corpus"),
    "disk": OSError(28, "No space left on device"),
    "runtime": RuntimeError("CUDA out of memory"),
    "own": IndexBroken("index chunk 3 is unreadable"),
}


def _body(args: argparse.Namespace) -> int:
    if args.what == "ok":
        return EXIT_OK
    if args.what == "warn":
        warnings.warn("skipped 2 files", stacklevel=1)
        return EXIT_OK
    if args.what == "interrupt":
        raise KeyboardInterrupt
    raise ERRORS[args.what]


@pytest.mark.parametrize(
    ("what", "code"),
    [("ok", 0), ("usage", 2), ("missing", 2), ("value", 2), ("disk", 1), ("runtime", 1), ("own", 1)],
)
def test_exit_codes_and_one_error_line(what, code, capsys) -> None:
    assert run_command("msa-demo", _body, _parser(), [what], expected=(IndexBroken,)) == code
    err = capsys.readouterr().err
    if code:
        assert err == f"msa-demo: error: {ERRORS[what]}\n"
    else:
        assert err == ""


def test_bad_usage_help_and_interrupt(capsys) -> None:
    assert run_command("msa-demo", _body, _parser(), []) == EXIT_USAGE  # argparse: missing argument
    assert "msa-demo: error: the following arguments are required: what" in capsys.readouterr().err
    assert run_command("msa-demo", _body, _parser(), ["--help"]) == EXIT_OK
    assert run_command("msa-demo", _body, _parser(), ["interrupt"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.endswith("msa-demo: interrupted\n")


def test_warnings_are_prefixed_lines(capsys) -> None:
    assert run_command("msa-demo", _body, _parser(), ["warn"]) == EXIT_OK
    assert capsys.readouterr().err == "msa-demo: warning: skipped 2 files\n"


def test_unexpected_errors_are_not_hidden_and_debug_gives_the_traceback(monkeypatch) -> None:
    with pytest.raises(IndexBroken):  # not declared as expected: a bug, so a traceback
        run_command("msa-demo", _body, _parser(), ["own"])
    monkeypatch.setenv("MSA_HF_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_command("msa-demo", _body, _parser(), ["missing"])


def test_exit_code_for() -> None:
    assert exit_code_for(UsageError("x")) == EXIT_USAGE
    assert exit_code_for(PermissionError("x")) == EXIT_FAILURE
    assert exit_code_for(KeyboardInterrupt()) == EXIT_INTERRUPTED


def test_path_types_refuse_missing_paths_at_parse_time(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="msa-demo")
    parser.add_argument("folder", type=existing_path("a folder of images"))
    parser.add_argument("--model", type=path_or_hub_id("a saved folder or a Hub id"))
    ran = []
    assert run_command("msa-demo", ran.append, parser, [str(tmp_path / "nope")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument folder: {tmp_path / 'nope'} does not exist (expected a folder of images)" in err and ran == []
    for model in ("./missing", "~/missing-msa-model", "/missing", "corpus.json"):
        assert run_command("msa-demo", ran.append, parser, [str(tmp_path), "--model", model]) == EXIT_USAGE
        assert (
            f"argument --model: {model} does not exist (expected a saved folder or a Hub id)" in capsys.readouterr().err
        )
    for model in ("user/msa-rsicd", "msa-tiny", str(tmp_path)):  # may be a Hub id, or exists
        assert parser.parse_args([str(tmp_path), "--model", model]).model == model
    assert ran == []
