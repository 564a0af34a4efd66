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


def test_inspect_reports_left_out_entries_and_strict_fails(make_karpathy, capsys) -> None:
    path = make_karpathy(["train"] * 6 + ["val", "test"])
    (path.parent / "images" / "2.jpg").unlink()
    assert main(["inspect", str(path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "problems: 1 images were left out of these statistics (missing image file: 1)" in captured.out
    assert "missing image file: 1" in captured.err and "images/2.jpg" in captured.err
    assert main(["inspect", str(path), "--json", "--no-progress"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["problems"] == {"dropped_images": 1, "counts": {"missing_image": 1}}
    assert main(["inspect", str(path), "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "images/2.jpg" in err and "msa-data: error: 1 of 8 images" in err


def test_validate_exits_2_and_lists_every_problem(make_karpathy, capsys) -> None:
    path = make_karpathy(["train"] * 6 + ["val", "test"])
    assert main(["validate", str(path), "--no-progress"]) == 0
    assert "8 images, no problems found" in capsys.readouterr().out
    data = json.loads(path.read_text())
    data["images"][1]["sentences"] = "field"
    data["images"][2]["sentences"][0]["raw"] = "  "
    path.write_text(json.dumps(data))
    (path.parent / "images" / "4.jpg").write_bytes(b"not a jpeg")
    assert main(["validate", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "malformed captions: 1" in err and 'images[1]: "sentences" is str' in err
    assert "unreadable image: 1" in err and "empty or whitespace-only caption: 1" in err
    assert err.strip().splitlines()[-1] == f"msa-data: error: 3 of 8 images in {path} have problems (listed above)."
    assert main(["validate", str(path), "--json", "--no-progress"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"unreadable_image": 1, "malformed_captions": 1, "empty_caption": 1}
    assert [p["entry"] for p in report["problems"]] == [3, 1, 2]
    assert main(["validate", str(path), "--no-decode", "--no-progress"]) == 2  # the JPEG exists: not decoded
    assert "unreadable image" not in capsys.readouterr().err


def test_progress_bars_show_while_validating_and_reading_headers(make_karpathy, capsys) -> None:
    path = make_karpathy(["train"] * 6 + ["val", "test"])
    assert main(["inspect", str(path)]) == 0
    err = capsys.readouterr().err
    assert "validating (decoding images)" in err and "reading image headers" in err


def test_errors_are_one_line_messages(tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["inspect", str(tmp_path / "nope.json")]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "full"), "--n-images", "2", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--column", "captions"]) == 2
    assert "msa-data: error: --column expects KEY=COLUMN" in capsys.readouterr().err


def test_synth_into_the_current_folder_is_refused_without_debris(tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["synth", "--out", str(tmp_path / "corpus"), "--n-images", "2", "--image-size", "16", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path / "corpus")
    assert main(["synth", "--out", ".", "--overwrite", "--n-images", "2", "--image-size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "msa-data: error:" in err and "current folder" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["dataset_rs_synth.json", "images"]


def test_synth_overwrite_refuses_a_folder_with_user_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["synth", "--out", str(out), "--n-images", "2", "--image-size", "16", "--quiet"]) == 0
    (out / "thesis.tex").write_text("mine")
    assert main(["synth", "--out", str(out), "--overwrite", "--n-images", "2", "--image-size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("msa-data: error:") and "did not write (thesis.tex)" in err and len(err.splitlines()) == 1
    assert (out / "thesis.tex").read_text() == "mine"


def test_validate_refuses_paths_outside_the_corpus_unless_allowed(make_karpathy, tmp_path: Path, capsys) -> None:
    path = make_karpathy(["train"] * 6 + ["val", "test"])
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.jpg").write_bytes((path.parent / "images" / "1.jpg").read_bytes())
    data = json.loads(path.read_text())
    data["images"][0]["filename"] = "../../secret/x.jpg"
    path.write_text(json.dumps(data))
    assert main(["validate", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "image path outside the corpus folder: 1" in err
    assert err.strip().splitlines()[-1] == (
        f"msa-data: error: 1 of 8 images in {path} have problems (listed above); pass --allow-outside-root if "
        "images outside the corpus folder are there on purpose."
    )
    assert main(["validate", str(path), "--no-progress", "--allow-outside-root"]) == 0
    assert main(["inspect", str(path), "--strict", "--no-progress"]) == 2
    assert main(["inspect", str(path), "--strict", "--no-progress", "--allow-outside-root"]) == 0
