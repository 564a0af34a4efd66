"""``msa-index build`` under a 2-process launcher gives the same index as one process.

``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`` is a real gloo run (one process each),
unlike ``accelerate launch --cpu``, which falls back to one process without MPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msa_hf import create_model_and_processor
from msa_hf.retrieval import ImageIndex, build_index
from msa_hf.retrieval.index_ann import AnnSettings

pytest.importorskip("accelerate", reason="multi-process builds use accelerate's PartialState")
faiss = pytest.importorskip("faiss", reason="the 2-process build also builds an IVF index (extra `index`)")

_SCRIPT = """
import sys
from msa_hf.retrieval.cli import index_main
sys.exit(index_main(sys.argv[1:]))
"""


def _torchrun(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "run_index.py"
    script.write_text(_SCRIPT)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_two_process_build_equals_one_process_build(image_folder, make_images, tiny_model_dir, tmp_path):
    make_images(image_folder, [f"more/{i}.png" for i in range(5)], seed=30)  # 11 good files, 1 corrupt
    out = tmp_path / "two"
    result = _torchrun(
        tmp_path,
        [
            "build",
            str(image_folder),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--chunk-size",
            "3",
            "--batch-size",
            "2",
            "--no-progress",
            "--index-factory",
            "IVF2,Flat",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("index ") == 1 and "11 images" in result.stdout  # only the main process reports
    two = ImageIndex.load(out)

    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)  # as torchrun's processes (OMP_NUM_THREADS=1), so the arithmetic matches
    faiss.omp_set_num_threads(1)
    try:
        model, processor, _ = create_model_and_processor(tiny_model_dir)
        with pytest.warns(UserWarning, match="Skipped 2 files"):
            one = build_index(
                image_folder,
                model,
                processor,
                tmp_path / "one",
                chunk_size=3,
                batch_size=2,
                progress=False,
                ann=AnnSettings("IVF2,Flat"),
            )
    finally:
        torch.set_num_threads(threads)  # never leak one thread into the tests that follow
        faiss.omp_set_num_threads(faiss_threads)
    assert two.files == one.files and two.manifest["skipped"] == one.manifest["skipped"]
    assert [f["sha256"] for f in two.manifest["files"]] == [f["sha256"] for f in one.manifest["files"]]
    assert torch.equal(two.embeddings, one.embeddings)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoded"] == 11 and not (out / ".partial").exists() and not (out / ".lock").exists()
    # The approximate index is built once, on the main process, from the gathered embeddings.
    assert "search: IVF2,Flat (nprobe 32), recall@10" in result.stdout
    assert (out / "ann.faiss").read_bytes() == (tmp_path / "one" / "ann.faiss").read_bytes()


def test_an_error_on_the_main_process_reaches_every_process(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _torchrun(tmp_path, ["build", str(empty), "--model", str(tiny_model_dir), "--out", str(tmp_path / "i")])
    assert result.returncode != 0
    assert result.stderr.count("msa-index: error: No image files found in") == 2  # both exit, no hang
