"""`msa-data synth` and `msa-data inspect` (called through main(argv), as the console script does)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from msa_hf.data.cli import main


def test_synth_then_inspect_with_sheet(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rs"
    assert main(["synth", "--out", str(out), "--n-images", "12", "--seed", "3", "--image-size", "48", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "dataset_rs_synth.json" in printed and "12 images" in printed
    meta = json.loads((out / "dataset_rs_synth.json").read_text())
    assert meta["image_size"] == 48 and Image.open(out / "images" / "00011.png").size == (48, 48)

    sheet = tmp_path / "sheet.png"
    assert main(["inspect", str(out), "--sheet", str(sheet), "--sheet-n", "4", "--sheet-split", "train"]) == 0
    text = capsys.readouterr().out
    lines = {
        line.split()[0]: line.split()
        for line in text.splitlines()
        if line.split() and line.split()[0] in ("train", "validation", "test")
    }
    assert all(lines[split][1:3] == ["4", "20"] for split in ("train", "validation", "test"))
    assert "48x48 (4)" in text and "RGB (4)" in text
    assert "vocabulary (all splits, lower-cased words):" in text
    with Image.open(sheet) as image:
        assert image.size == (4 * 200 + 8, 192 + 46 + 16)  # 4 thumbnails in one row, caption band below
        band = image.crop((8, 8 + 192, 8 + 192, 8 + 192 + 46)).convert("L")
        assert np.asarray(band).min() < 100, "captions are drawn under the thumbnails"


def test_inspect_json_reports_statistics_and_provenance(make_karpathy, capsys) -> None:
    path = make_karpathy(["train"] * 10 + ["test"] * 2, ext="tif", filepath=None, sixteen_bit=(0,))
    assert main(["inspect", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    splits = stats["splits"]
    assert [splits[s]["images"] for s in ("train", "validation", "test")] == [9, 1, 2]
    assert splits["test"]["captions"] == 10
    assert splits["train"]["captions_per_image"] == {"min": 5, "mean": 5.0, "max": 5}
    assert splits["test"]["caption_words"]["min"] >= 5
    modes = Counter_sum(splits, "image_modes")
    assert modes.get("RGB") == 11 and sum(modes.values()) == 12
    assert stats["provenance"]["validation"]["derived_from_train"].startswith("1 of 10 train images")
    assert stats["vocabulary"] > 10


def Counter_sum(splits: dict, key: str) -> dict:
    total: dict = {}
    for s in splits.values():
        for k, v in s[key].items():
            total[k] = total.get(k, 0) + v
    return total


def test_inspect_drops_bad_images_and_strict_fails(make_karpathy, capsys) -> None:
    path = make_karpathy(["train"] * 6 + ["val", "test"])
    (path.parent / "images" / "2.jpg").unlink()
    assert main(["inspect", str(path)]) == 0
    captured = capsys.readouterr()
    assert "dropped 1 bad images" in captured.out
    assert "missing image file: 1" in captured.err and "images/2.jpg" in captured.err
    assert main(["inspect", str(path), "--strict"]) == 2
    assert "missing image file: 1" in capsys.readouterr().err


def test_errors_are_one_line_messages(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nope.json")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "full"), "--n-images", "2", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
