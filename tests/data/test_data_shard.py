"""`msa-data shard`: Parquet shards that datasets streams, bad images left out and counted, resumable."""

from __future__ import annotations

import json

import datasets

from msa_hf.data import load_corpus
from msa_hf.data.cli import main


def test_shard_writes_streamable_parquet_with_the_original_bytes(make_karpathy, tmp_path, capsys) -> None:
    source = make_karpathy(["train"] * 9 + ["val"] * 2 + ["test"] * 2)
    broken = source.parent / "images" / "4.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "shards"
    args = ["shard", str(source), str(out), "--shard-size", "4", "--num-proc", "2", "--no-progress"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "left out images/4.jpg: unreadable_image" in captured.err
    assert "train 8 images / 3 shards" in captured.out

    names = sorted(p.name for p in (out / "data").iterdir())
    assert names == [
        "test-00000-of-00001.parquet",
        *(f"train-0000{k}-of-00003.parquet" for k in range(3)),
        "validation-00000-of-00001.parquet",
    ]
    manifest = json.loads((out / "shards.json").read_text())
    assert manifest["splits"]["train"] == {"images": 8, "pairs": 40, "shards": 3, "bad_images": 1, "max_captions": 5}
    assert [(b["split"], b["file_name"], b["kind"]) for b in manifest["bad"]] == [
        ("train", "images/4.jpg", "unreadable_image")
    ]
    assert manifest["source"] == str(source) and manifest["msa_hf_version"]

    stream = datasets.load_dataset("parquet", data_dir=str(out), split="train", streaming=True)
    stream = stream.cast_column("image", datasets.Image(decode=False))
    rows = list(stream)
    assert [r["image_id"] for r in rows] == [0, 1, 2, 4, 5, 6, 7, 8]  # entry 3 (4.jpg) left out
    first = rows[0]
    assert first["image"]["bytes"] == (source.parent / "images" / "1.jpg").read_bytes()  # not re-encoded
    assert first["source_path"] == str(source.parent / "images" / "1.jpg") and len(first["captions"]) == 5
    assert load_corpus(out)["test"].num_rows == 2  # the shard folder is a corpus like any other


def test_an_interrupted_shard_run_keeps_finished_shards(make_karpathy, tmp_path, capsys) -> None:
    source = make_karpathy(["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    out = tmp_path / "shards"
    args = ["shard", str(source), str(out), "--shard-size", "4", "--no-progress"]
    assert main(args) == 0
    kept, lost = out / "data" / "train-00000-of-00002.parquet", out / "data" / "train-00001-of-00002.parquet"
    kept_stat = kept.stat()
    lost.unlink()  # as if killed while writing it
    (out / "shards.json").unlink()
    assert main(args) == 0
    assert (
        lost.is_file() and kept.stat().st_mtime_ns == kept_stat.st_mtime_ns and kept.stat().st_ino == kept_stat.st_ino
    )
    assert json.loads((out / "shards.json").read_text())["splits"]["train"]["images"] == 8
    capsys.readouterr()

    assert main(["shard", str(source), str(out), "--shard-size", "3", "--no-progress"]) == 2
    assert "holds shards of another source or --shard-size" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["shard", str(source), str(other), "--no-progress"]) == 2
    assert "is not an msa-data shard output" in capsys.readouterr().err
