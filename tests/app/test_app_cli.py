"""msa-app's command line and the Spaces entry point app.py, with the server itself stubbed out."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import pytest

from msa_hf.app.cli import main

pytest.importorskip("gradio", reason="msa-app needs gradio (extra `app`)")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def launched(monkeypatch):
    """Replace the web server: record what would have been served."""
    import msa_hf.app.ui as ui

    calls = []
    monkeypatch.setattr(ui, "launch", lambda demo, service, host, port: calls.append((demo, service, host, port)))
    for name in ("MSA_APP_MODEL", "MSA_APP_INDEX", "MSA_APP_IMAGES", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_serves_the_index_with_the_model(launched, tiny_model_dir, synth_index_path, capsys):
    assert main(["--model", str(tiny_model_dir), "--index", str(synth_index_path), "--port", "7999"]) == 0
    (_, service, host, port) = launched[0]
    assert (host, port) == ("127.0.0.1", 7999) and len(service.index) == 12
    assert "msa-app: 12 images" in capsys.readouterr().out


def test_problems_are_warned_and_the_app_still_serves(launched, mismatched_model_dir, synth_index_path, capsys):
    assert main(["--model", str(mismatched_model_dir), "--index", str(synth_index_path)]) == 0
    assert len(launched) == 1
    assert "msa-app: warning: Index" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--model is required"),
        (["--model", "m"], "--index is required"),
        (["--model", "m", "--index", "i", "--port", "99999"], "--port must be from 1 to 65535"),
    ],
)
def test_bad_usage_exits_2(launched, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err and launched == []


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "--index" in capsys.readouterr().out


def test_app_py_reads_the_environment(launched, monkeypatch, tiny_model_dir, synth_index_path, synth_archive):
    monkeypatch.setenv("MSA_APP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MSA_APP_INDEX", str(synth_index_path))
    monkeypatch.setenv("MSA_APP_IMAGES", str(synth_archive))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7870")
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
    assert exit_info.value.code == 0
    (_, service, host, port) = launched[0]
    assert (host, port) == ("0.0.0.0", 7870) and service.image_root == synth_archive


def test_busy_port_is_a_one_line_error(launched, tiny_model_dir, synth_index_path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["--model", str(tiny_model_dir), "--index", str(synth_index_path), "--port", str(port)])
    assert code == 1 and launched == []
    assert f"msa-app: error: cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def test_threads_option(launched, tiny_model_dir, synth_index_path):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["--model", str(tiny_model_dir), "--index", str(synth_index_path), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main(["--model", "m", "--index", "i", "--threads", "0"]) == 2


def test_search_options_reach_the_service(launched, tiny_model_dir, synth_index_path, tmp_path):
    pytest.importorskip("faiss", reason="approximate search needs faiss-cpu (extra `index`)")
    from msa_hf.retrieval.index_ann import AnnSettings
    from msa_hf.retrieval.index_build import rebuild_ann

    index = tmp_path / "archive.idx"
    shutil.copytree(synth_index_path, index)
    rebuild_ann(index, AnnSettings("IVF2,Flat"))
    assert main(["--model", str(tiny_model_dir), "--index", str(index), "--nprobe", "1"]) == 0
    service = launched[0][1]
    assert service.search_options == {"nprobe": 1, "ef_search": None} and service.status()["backend"] == "ann"
