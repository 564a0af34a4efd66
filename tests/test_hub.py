"""msa-push and Hub ids: folder checks, dry runs, real uploads to a local fake Hub, real failures.

Nothing here reaches huggingface.co: uploads go to an ``http.server`` in a thread that speaks
the few Hub endpoints ``create_repo``/``create_branch``/``upload_folder`` use (or answers
with an error code), the unreachable case points ``HF_ENDPOINT`` at a closed local port in a
fresh interpreter, and Hub ids are resolved from a Hugging Face cache built in ``tmp_path``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

import msa_hf
from msa_hf import create_model_and_processor
from msa_hf.cli_utils import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from msa_hf.hub import FolderCheckError, check_folder, folder_files, main, push_to_hub
from msa_hf.model_card import Evaluation, build_model_card, write_card
from msa_hf.retrieval.cli import classify_main, eval_main, index_main, search_main
from msa_hf.sources import HubError, model_fingerprint, resolve_model_source

SRC = Path(msa_hf.__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
METRICS = {"i2t_r1": 10.0, "i2t_r5": 20.0, "i2t_r10": 30.0, "t2i_r1": 5.0, "t2i_r5": 15.0, "t2i_r10": 25.0, "mr": 17.5}


def run(main_fn, argv, capsys):
    rc = main_fn([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder`` (hidden ones too) with size, mtime and content hash."""
    return {
        p.relative_to(folder).as_posix(): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def push_dir(tmp_path, tiny_model_dir, tiny_config) -> Path:
    """A complete folder (model, processor, card) plus leftovers a push must skip."""
    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder)
    card = build_model_card(
        tiny_config, model_name="msa-tiny-test", evaluations=[Evaluation("rs-synth", "test", METRICS)]
    )
    write_card(card, folder)
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_msa.cpython-311.pyc").write_bytes(b"\0")
    return folder


def reset_hub_sessions() -> None:
    """huggingface_hub < 1 builds its HTTP session once, offline or not: drop it when the mode changes."""
    getattr(huggingface_hub.utils, "reset_sessions", lambda: None)()


@pytest.fixture
def hub_mode(monkeypatch):
    """``hub_mode(offline)`` switches offline mode for one test, as HF_HUB_OFFLINE at start-up would."""

    def switch(offline: bool) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        reset_hub_sessions()

    yield switch
    monkeypatch.undo()
    reset_hub_sessions()


@pytest.fixture
def offline_off(hub_mode):
    """Online mode, whatever the environment says (uploads need it)."""
    hub_mode(False)


# ---------------------------------------------------------------------------- a local fake Hub


class FakeHub:
    """A Hub stand-in: records requests; ``fail`` maps a route (create, branch, preupload, commit) to a status."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.fail = fail or {}
        self.requests: list[tuple[str, str]] = []
        self.committed: dict[str, bytes] = {}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # model look-ups: this Hub holds no model, and says so as the real one does
                self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                route = hub.route(self.path)
                hub.requests.append((route, self.path))
                if route in hub.fail:
                    self.reply(hub.fail[route], {"error": f"fake {route} failure"})
                elif route == "create":
                    self.reply(200, {"url": f"{hub.url}/user/name", "name": "user/name"})
                elif route == "branch":
                    self.reply(200, {})
                elif route == "validate":
                    self.reply(200, {"errors": [], "warnings": []})
                elif route == "preupload":
                    files = json.loads(body)["files"]
                    modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    self.reply(200, {"files": modes})
                elif route == "commit":
                    for line in body.decode().splitlines():
                        entry = json.loads(line)
                        if entry["key"] == "file":
                            hub.committed[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
                    self.reply(200, {"commitUrl": f"{hub.url}/user/name/commit/{COMMIT}", "commitOid": COMMIT})
                else:
                    self.reply(404, {"error": "unknown route"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def route(path: str) -> str:
        markers = (("/repos/create", "create"), ("/branch/", "branch"), ("/validate-yaml", "validate"))
        for marker, name in (*markers, ("/preupload/", "preupload")):
            if marker in path:
                return name
        return "commit" if "/commit/" in path else "other"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(monkeypatch, offline_off):
    def start(fail: dict[str, int] | None = None) -> FakeHub:
        hub = FakeHub(fail)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
        return hub

    return start


# ---------------------------------------------------------------------------- the folder check


def test_complete_folder_passes_and_lists_what_is_uploaded(push_dir):
    files = check_folder(push_dir)
    names = [f.path for f in files]
    assert "model.safetensors" in names and "README.md" in names and "config.json" in names
    assert ".DS_Store" not in names and not any("__pycache__" in n for n in names)
    assert all(f.size == (push_dir / f.path).stat().st_size for f in files)


def test_every_missing_piece_is_named(push_dir, capsys):
    (push_dir / "config.json").unlink()
    (push_dir / "model.safetensors").unlink()
    (push_dir / "README.md").unlink()
    for name in ("tokenizer.json", "vocab.txt"):
        (push_dir / name).unlink(missing_ok=True)
    rc, _out, err = run(main, [push_dir, "--repo-id", "user/name", "--dry-run"], capsys)
    assert rc == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and err.startswith("msa-push: error:")
    for piece in ("config.json", "weights model.safetensors", "tokenizer vocabulary", "model card README.md"):
        assert piece in err


def test_remote_code_files_are_followed_through_imports(push_dir):
    modeling = push_dir / "modeling_msa.py"
    modeling.write_text("from .msa_extra_helpers import helper\n" + modeling.read_text())
    (push_dir / "processing_msa.py").unlink()
    with pytest.raises(FolderCheckError) as caught:
        check_folder(push_dir)
    message = str(caught.value)
    assert "msa_extra_helpers.py (needed by modeling_msa.py)" in message
    assert "processing_msa.py (needed by auto_map processing_msa.MSAProcessor)" in message


def test_folder_whose_files_exist_but_do_not_load_is_refused(push_dir):
    weights = push_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FolderCheckError, match="would not load from the Hub: Could not load an MSA model"):
        check_folder(push_dir)


def test_pickle_only_weights_are_refused_with_the_fix(push_dir):
    (push_dir / "model.safetensors").rename(push_dir / "pytorch_model.bin")
    with pytest.raises(FolderCheckError, match=r"found \['pytorch_model.bin'\]: re-save with model.save_pretrained"):
        check_folder(push_dir)


# ---------------------------------------------------------------------------- msa-push


def test_dry_run_lists_files_with_sizes_and_sends_nothing(push_dir, fake_hub, capsys):
    with fake_hub() as hub:
        rc, out, err = run(main, [push_dir, "--repo-id", "user/name", "--dry-run"], capsys)
    assert rc == EXIT_OK, err
    assert hub.requests == []
    lines = out.strip().splitlines()
    listed = [line.split("  ")[-1] for line in lines[:-1]]
    assert listed == [f.path for f in folder_files(push_dir)]
    assert f"dry run: would upload {len(listed)} files" in lines[-1] and "/user/name" in lines[-1]
    assert "1.7 MiB  model.safetensors" in out


def test_push_uploads_exactly_the_dry_run_files_to_a_branch(push_dir, fake_hub, capsys):
    before = snapshot(push_dir)
    with fake_hub() as hub:
        rc, out, err = run(
            main, [push_dir, "--repo-id", "user/name", "--revision", "dev", "--commit-message", "first"], capsys
        )
    assert rc == EXIT_OK, err
    routes = dict(hub.requests)
    assert list(routes) == ["create", "branch", "validate", "preupload", "commit"]
    assert routes["branch"].endswith("/branch/dev") and routes["commit"].endswith("/commit/dev")
    assert sorted(hub.committed) == [f.path for f in folder_files(push_dir)]
    assert hub.committed["model.safetensors"] == (push_dir / "model.safetensors").read_bytes()
    assert f"pushed {len(hub.committed)} files" in out and f"{hub.url}/user/name" in out and COMMIT in out
    assert snapshot(push_dir) == before


@pytest.mark.parametrize(
    "fail, expected",
    [
        ({"create": 401}, "HTTP 401, bad or missing token"),
        ({"create": 403}, "HTTP 403, bad or missing token"),
        ({"preupload": 413}, "rejected the request to upload"),
        ({"create": 500}, "HTTP 500, a server-side error"),
        ({"commit": 422}, "rejected the request to upload"),
    ],
)
def test_hub_errors_are_one_line_and_leave_the_folder_alone(push_dir, fake_hub, fail, expected, capsys):
    before = snapshot(push_dir)
    with fake_hub(fail) as hub:
        rc, _out, err = run(main, [push_dir, "--repo-id", "user/name"], capsys)
    assert rc == EXIT_FAILURE
    assert len(err.strip().splitlines()) == 1 and err.startswith("msa-push: error:")
    assert expected in err and f"fake {next(iter(fail))} failure" in err
    assert any(route == next(iter(fail)) for route, _ in hub.requests)
    assert snapshot(push_dir) == before


def test_unreachable_hub_fails_in_one_line(push_dir):
    """HF_ENDPOINT at a closed local port, in a fresh interpreter, as a user would hit it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the with-block ends
    before = snapshot(push_dir)
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "MSA_HF_DEBUG"}}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN="hf_fake", PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-m", "msa_hf.hub", str(push_dir), "--repo-id", "user/name"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_FAILURE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"msa-push: error: could not reach the Hub at http://127.0.0.1:{port}")
    assert "Connect" in lines[0]
    assert snapshot(push_dir) == before


def test_offline_mode_refuses_to_push_in_one_line(push_dir, hub_mode, capsys):
    hub_mode(True)
    rc, _out, err = run(main, [push_dir, "--repo-id", "user/name"], capsys)
    assert rc == EXIT_FAILURE and len(err.strip().splitlines()) == 1
    assert "HF_HUB_OFFLINE=1 is set and this needs the network" in err


def test_offline_message_names_the_variable_that_is_set(push_dir):
    """Only TRANSFORMERS_OFFLINE=1 set (huggingface_hub honours it too): the message names it, not HF_HUB_OFFLINE."""
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MSA_HF_DEBUG"}}
    env.update(TRANSFORMERS_OFFLINE="1", HF_TOKEN="hf_fake", PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-m", "msa_hf.hub", str(push_dir), "--repo-id", "user/name"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_FAILURE, proc.stderr
    assert "TRANSFORMERS_OFFLINE=1 is set and this needs the network" in proc.stderr
    assert "HF_HUB_OFFLINE" not in proc.stderr


def test_bad_repo_id_is_a_usage_error(push_dir, capsys):
    rc, _out, err = run(main, [push_dir, "--repo-id", "not a/valid/id"], capsys)
    assert rc == EXIT_USAGE and "--repo-id 'not a/valid/id' is not a Hub id" in err


def test_write_card_fills_in_a_missing_card(push_dir, capsys):
    (push_dir / "README.md").unlink()
    (push_dir / "test_metrics.json").write_text(
        json.dumps({"dataset": "rs-synth", "split": "test", "metrics": METRICS})
    )
    rc, out, err = run(main, [push_dir, "--repo-id", "user/name", "--dry-run", "--write-card"], capsys)
    assert rc == EXIT_OK, err
    assert "wrote" in out and "README.md" in out.splitlines()[-3] + out
    card = (push_dir / "README.md").read_text()
    assert 'AutoModel.from_pretrained("user/name")' in card and "| rs-synth | test | 10.00 |" in card
    rc, out, _ = run(main, [push_dir, "--repo-id", "user/name", "--dry-run", "--write-card"], capsys)
    assert rc == EXIT_OK and "exists; keeping it" in out and (push_dir / "README.md").read_text() == card


def test_push_to_hub_python_api_dry_run(push_dir):
    result = push_to_hub(push_dir, "user/name", revision="v2", dry_run=True)
    assert result.dry_run and result.commit_url is None
    assert result.repo_url.endswith("/user/name/tree/v2")
    assert [f.path for f in result.files] == [f.path for f in folder_files(push_dir)]


# ---------------------------------------------------------------------------- Hub ids, offline


@pytest.fixture
def hub_cache(tmp_path, tiny_model_dir, monkeypatch, hub_mode) -> Path:
    """A Hugging Face cache holding ``user/msa-tiny`` at ``main`` and tag ``v1`` (one commit), offline."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--user--msa-tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "v1").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hub_mode(True)
    return cache


def test_hub_id_resolves_from_the_cache_offline(hub_cache):
    snapshot_dir = hub_cache / "models--user--msa-tiny" / "snapshots" / COMMIT
    for revision in (None, "main", "v1", COMMIT):
        assert Path(resolve_model_source("user/msa-tiny", revision)) == snapshot_dir
    model, _processor, _ = create_model_and_processor("user/msa-tiny", "v1")
    identity = model_fingerprint(model)
    assert identity["name_or_path"] == "user/msa-tiny" and identity["revision"] == COMMIT


def test_hub_id_missing_from_the_cache_offline_is_one_clear_error(hub_cache):
    with pytest.raises(Exception, match=r"user/other@main is not in the local Hugging Face cache .* HF_HUB_OFFLINE=1"):
        resolve_model_source("user/other")
    with pytest.raises(Exception, match=r"user/msa-tiny@v2 is not in the local Hugging Face cache"):
        resolve_model_source("user/msa-tiny", "v2")


def test_hub_id_online_failures_are_one_line(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with fake_hub() as hub, pytest.raises(HubError) as caught:  # the fake Hub knows no model: HTTP 404
        resolve_model_source("user/nothing", "v3")
    message = str(caught.value)
    assert message.startswith("the Hub rejected the request to download user/nothing@v3 (HTTP 404")
    assert "\n" not in message
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # shut down now: nothing listens there
    with pytest.raises(HubError) as caught:
        resolve_model_source("user/nothing")
    assert str(caught.value).startswith(
        f"user/nothing@main is not in the local Hugging Face cache, and could not reach the Hub at {hub.url}"
    )


def test_mistyped_local_path_says_it_was_tried_as_a_folder(hub_cache, tmp_path, monkeypatch):
    (tmp_path / "outputs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        HubError, match=r"outputs/bset@main is not in .* \(there is no local folder 'outputs/bset' either\)"
    ):
        resolve_model_source("outputs/bset")


def test_local_paths_and_revisions(tiny_model_dir, tmp_path):
    assert resolve_model_source(tiny_model_dir) == str(tiny_model_dir)
    with pytest.raises(UsageError, match="applies to Hub ids"):
        resolve_model_source(tiny_model_dir, "main")
    with pytest.raises(UsageError, match="neither an existing folder nor a Hub id"):
        resolve_model_source(tmp_path / "missing" / "folder")


def _images(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("airport/1.png", "airport/2.png", "farmland/1.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_index_search_and_classify_take_a_hub_id_offline(hub_cache, tmp_path, capsys):
    images = _images(tmp_path / "scenes")
    argv = ["build", images, "--model", "user/msa-tiny", "--revision", "v1", "--out", tmp_path / "idx", "--no-progress"]
    rc, _out, err = run(index_main, argv, capsys)
    assert rc == EXIT_OK, err
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["model"]["name_or_path"] == "user/msa-tiny" and manifest["model"]["revision"] == COMMIT
    rc, out, err = run(search_main, [tmp_path / "idx", "an airport", "-k", 2, "--json"], capsys)  # the index's model
    assert rc == EXIT_OK and len(json.loads(out)["results"]) == 2, err
    rc, out, err = run(
        search_main, [tmp_path / "idx", "a field", "--model", "user/msa-tiny", "--revision", COMMIT], capsys
    )
    assert rc == EXIT_OK, err
    rc, out, err = run(classify_main, [images, "--model", "user/msa-tiny", "--json", "--no-progress"], capsys)
    assert rc == EXIT_OK and json.loads(out)["num_images"] == 3, err


def test_eval_takes_a_hub_id_offline(hub_cache, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    n = 3
    split = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(n)],
            "captions": [[f"a plane near the runway {i}"] * 5 for i in range(n)],
            "image_id": list(range(n)),
            "file_name": [f"{i}.png" for i in range(n)],
        }
    )
    splits = {
        name: split.map(lambda row, s=name: {"file_name": f"{s}-{row['file_name']}"})
        for name in ("train", "validation", "test")
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "corpus"))
    argv = ["--model", "user/msa-tiny", "--corpus", tmp_path / "corpus", "--output-dir", tmp_path / "eval"]
    rc, out, err = run(eval_main, [*argv, "--num-examples", 0, "--no-progress"], capsys)
    assert rc == EXIT_OK and "mR =" in out, err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["model"]["name_or_path"] == "user/msa-tiny"


@pytest.mark.parametrize("main_fn", [index_main, classify_main])
def test_hub_id_miss_offline_is_one_line_exit_1(main_fn, hub_cache, tmp_path, capsys):
    images = _images(tmp_path / "scenes")
    argv = [images, "--model", "user/absent"]
    if main_fn is index_main:
        argv = ["build", *argv, "--out", tmp_path / "idx"]
    rc, _out, err = run(main_fn, argv, capsys)
    assert rc == EXIT_FAILURE
    assert len(err.strip().splitlines()) == 1
    assert "user/absent@main is not in the local Hugging Face cache" in err and "HF_HUB_OFFLINE=1" in err


def test_offline_env_vars_in_a_fresh_interpreter(hub_cache, tmp_path):
    """HF_HUB_CACHE + HF_HUB_OFFLINE=1 as a user sets them: a hit loads, a miss is one line (one interpreter)."""
    images = _images(tmp_path / "scenes")
    env = {k: v for k, v in os.environ.items() if k != "MSA_HF_DEBUG"}
    env.update(HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(SRC))
    script = """
import contextlib, io, json, sys
from msa_hf.retrieval.cli import classify_main
report = {}
for name, model in (("hit", "user/msa-tiny"), ("miss", "user/absent")):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = classify_main([sys.argv[1], "--model", model, "--json", "--no-progress"])
    report[name] = {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}
print(json.dumps(report))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(images)], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    hit, miss = report["hit"], report["miss"]
    assert hit["rc"] == EXIT_OK and json.loads(hit["out"])["num_images"] == 3, hit["err"]
    assert miss["rc"] == EXIT_FAILURE
    assert [line for line in miss["err"].strip().splitlines() if not line.startswith("[transformers]")] == [
        f"msa-classify: error: user/absent@main is not in the local Hugging Face cache ({hub_cache}) and "
        "HF_HUB_OFFLINE=1 forbids downloading it: run once online, or pass a local folder."
    ]
