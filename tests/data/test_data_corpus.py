"""load_corpus on every source type: Karpathy JSON (jpg, tif without val), imagefolder
(jsonl in split folders, csv at the root), save_to_disk with a Hub-style column mapping,
an in-memory DatasetDict, and a folder written by `msa-data synth`."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from msa_hf.data import corpus_info, generate_synth_corpus, load_corpus


def _check_schema(corpus: datasets.DatasetDict) -> None:
    assert list(corpus) == ["train", "validation", "test"]
    for split in corpus.values():
        assert isinstance(split.features["image"], datasets.Image)
        assert split.features["captions"] == datasets.List(datasets.Value("string"))
        assert split.features["image_id"] == datasets.Value("int64")
        assert split.features["file_name"] == datasets.Value("string")
    ids = [i for split in corpus.values() for i in split["image_id"]]
    assert len(ids) == len(set(ids)), "image ids must be unique over the corpus"


def test_karpathy_json_with_all_splits(karpathy_corpus: Path, caption_of) -> None:
    corpus = load_corpus(karpathy_corpus)
    _check_schema(corpus)
    assert [corpus[s].num_rows for s in corpus] == [8, 2, 2]
    row = corpus["validation"][0]
    assert row["file_name"] == "images/9.jpg"  # filepath honoured, relative to the JSON's folder
    assert row["image_id"] == 8
    assert row["captions"] == [caption_of(8, k) for k in range(5)]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (32, 32)
    # paths are stored, not decoded pixels
    stored = corpus["train"].data.column("image").to_pylist()[0]
    assert stored["bytes"] is None and stored["path"].endswith("images/1.jpg")
    assert all(info["derived_from_train"] is None for info in corpus_info(corpus).values())


def test_folder_with_one_karpathy_json_is_detected(karpathy_corpus: Path) -> None:
    corpus = load_corpus(karpathy_corpus.parent)
    assert corpus["train"].num_rows == 8


def test_tif_karpathy_without_val_derives_validation_from_train(make_karpathy, caplog) -> None:
    # RSITMD style: no "val" in the JSON, no filepath key, .tif images incl. a 16-bit one
    path = make_karpathy(["train"] * 16 + ["test"] * 4, ext="tif", filepath=None, sixteen_bit=(0, 3))
    with caplog.at_level(logging.WARNING, logger="msa_hf.data"):
        corpus = load_corpus(path, validation_fraction=0.25, seed=3)
    _check_schema(corpus)
    assert [corpus[s].num_rows for s in corpus] == [12, 4, 4]
    test_names = set(corpus["test"]["file_name"])
    assert test_names == {f"{i}.tif" for i in range(17, 21)}, "test must be untouched"
    val_names = set(corpus["validation"]["file_name"])
    assert val_names.isdisjoint(corpus["train"]["file_name"]) and val_names.isdisjoint(test_names)
    assert "no validation split" in caplog.text and "derived it from train" in caplog.text
    info = corpus_info(corpus["validation"])
    assert "4 of 16 train images" in info["derived_from_train"] and "seed 3" in info["derived_from_train"]
    assert corpus_info(corpus["train"])["derived_from_train"] is None
    # deterministic for a seed, different for another
    again = load_corpus(path, validation_fraction=0.25, seed=3)
    assert again["validation"]["file_name"] == corpus["validation"]["file_name"]
    other = load_corpus(path, validation_fraction=0.25, seed=4)
    assert set(other["validation"]["file_name"]) != val_names
    # 16-bit TIFF decodes (mode I;16) and the 8-bit one is RGB
    modes = {row["file_name"]: row["image"].mode for row in corpus["train"]}
    modes.update({row["file_name"]: row["image"].mode for row in corpus["validation"]})
    assert modes["1.tif"] in ("I;16", "I;16L", "I") and modes["2.tif"] == "RGB"


def test_missing_test_and_val_are_both_derived_from_train(make_karpathy) -> None:
    path = make_karpathy(["train"] * 20)
    corpus = load_corpus(path, validation_fraction=0.1)
    assert [corpus[s].num_rows for s in corpus] == [16, 2, 2]
    names = [set(corpus[s]["file_name"]) for s in corpus]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_image_root_override(make_karpathy, tmp_path: Path) -> None:
    path = make_karpathy(["train"] * 4 + ["val", "test"], filepath=None)
    moved = tmp_path / "elsewhere"
    path.parent.rename(moved)
    json_path = moved / path.name
    (tmp_path / "json_only").mkdir()
    target = tmp_path / "json_only" / path.name
    target.write_text(json_path.read_text())
    with pytest.raises(ValueError, match="missing image file"):
        load_corpus(target)
    corpus = load_corpus(target, image_root=moved)
    assert corpus["train"].num_rows == 4 and corpus["test"][0]["image"].size == (32, 32)


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(folder / name)


def test_imagefolder_jsonl_in_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "hubfolder"
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        names = [f"{split}_{i}.png" for i in range(n)]
        _write_images(root / split, names)
        with open(root / split / "metadata.jsonl", "w") as fh:
            for name in names:
                fh.write(json.dumps({"file_name": name, "captions": [f"{name} caption {k}" for k in range(5)]}) + "\n")
    corpus = load_corpus(root)
    _check_schema(corpus)
    assert [corpus[s].num_rows for s in corpus] == [6, 2, 2]
    row = corpus["validation"][1]
    assert row["file_name"] == "valid/valid_1.png"
    assert row["captions"] == [f"valid_1.png caption {k}" for k in range(5)]
    assert row["image"].size == (24, 24)


def test_imagefolder_csv_one_caption_per_row_at_root(tmp_path: Path) -> None:
    # One row per (image, caption), split from the first folder of file_name; no validation folder.
    root = tmp_path / "csvfolder"
    rows = []
    for split, n in (("train", 10), ("test", 2)):
        names = [f"img{i}.jpg" for i in range(n)]
        _write_images(root / split, names)
        rows += [
            {"file_name": f"{split}/{name}", "text": f"{split} {name} says {k}"} for name in names for k in range(3)
        ]
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file_name", "text"])
        writer.writeheader()
        writer.writerows(rows)
    corpus = load_corpus(root, validation_fraction=0.2)
    assert [corpus[s].num_rows for s in corpus] == [8, 2, 2]
    first = corpus["test"][0]
    assert first["file_name"] == "test/img0.jpg"
    assert first["captions"] == [f"test img0.jpg says {k}" for k in range(3)]


def _hub_like(tmp_path: Path) -> datasets.DatasetDict:
    """A Hub-style dataset: embedded image bytes, 'sentences' + 'filename' columns, train/valid/test."""
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "sentences": datasets.List(datasets.Value("string")),
            "filename": datasets.Value("string"),
            "extra": datasets.Value("int32"),
        }
    )
    splits = {}
    for split, n in (("train", 5), ("valid", 2), ("test", 3)):
        rows = {"img": [], "sentences": [], "filename": [], "extra": []}
        for i in range(n):
            rng = np.random.default_rng(i)
            rows["img"].append(Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)))
            rows["sentences"].append([f"{split} {i} sentence {k}" for k in range(5)])
            rows["filename"].append(f"{split}_{i}.jpg")
            rows["extra"].append(i)
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(splits)


def test_saved_hub_style_dataset_with_column_mapping(tmp_path: Path) -> None:
    hub = _hub_like(tmp_path)
    hub.save_to_disk(str(tmp_path / "saved"))
    corpus = load_corpus(tmp_path / "saved", columns={"image": "img", "captions": "sentences", "file_name": "filename"})
    _check_schema(corpus)
    assert [corpus[s].num_rows for s in corpus] == [5, 2, 3]
    row = corpus["test"][2]
    assert row["file_name"] == "test_2.jpg" and row["captions"][4] == "test 2 sentence 4"
    assert row["image"].size == (20, 20)
    # the mapping is optional for these common names
    detected = load_corpus(tmp_path / "saved")
    assert detected["validation"]["file_name"] == ["valid_0.jpg", "valid_1.jpg"]


def test_in_memory_datasetdict_and_bad_mapping(tmp_path: Path) -> None:
    hub = _hub_like(tmp_path)
    corpus = load_corpus(hub)
    assert corpus["train"][0]["captions"][0] == "train 0 sentence 0"
    with pytest.raises(ValueError, match="'nope', which is not a column"):
        load_corpus(hub, columns={"captions": "nope"})


def test_numbered_caption_columns(tmp_path: Path) -> None:
    features = datasets.Features(
        {"image": datasets.Image(), **{f"caption_{k}": datasets.Value("string") for k in (1, 2, 3)}}
    )
    rows = {
        "image": [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(6)],
        **{f"caption_{k}": [f"c{k} of {i}" for i in range(6)] for k in (1, 2, 3)},
    }
    corpus = load_corpus(
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}), validation_fraction=0.2
    )
    assert corpus["train"][0]["captions"] == [f"c{k} of 0" for k in (1, 2, 3)]
    assert sum(corpus[s].num_rows for s in corpus) == 6


def test_synth_folder_is_a_corpus(tmp_path: Path) -> None:
    generate_synth_corpus(tmp_path / "rs", n_images=12, image_size=32)
    corpus = load_corpus(tmp_path / "rs")
    _check_schema(corpus)
    assert [corpus[s].num_rows for s in corpus] == [4, 4, 4]
    assert all(len(c) == 5 for c in corpus["train"]["captions"])


def test_unknown_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_corpus(tmp_path / "missing" / "dataset.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell what corpus this folder holds"):
        load_corpus(tmp_path / "empty")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="not a Karpathy-style caption file"):
        load_corpus(bad)
    weird = tmp_path / "weird.json"
    weird.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "holdout", "sentences": ["x"]}]}))
    with pytest.raises(ValueError, match="unknown split name 'holdout'"):
        load_corpus(weird, on_bad="drop")
    with pytest.raises(ValueError, match="on_bad"):
        load_corpus(weird, on_bad="ignore")


def test_hub_id_goes_through_load_dataset_with_the_mapping(tmp_path: Path, monkeypatch) -> None:
    # No Hub here: stand in for datasets.load_dataset and check the id reaches it and the mapping applies.
    asked = []
    hub = _hub_like(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda name: asked.append(name) or hub)
    corpus = load_corpus(
        "someone/rs-captions", columns={"image": "img", "captions": "sentences", "file_name": "filename"}
    )
    assert asked == ["someone/rs-captions"]
    assert corpus["validation"][0]["file_name"] == "valid_0.jpg"
    assert corpus_info(corpus["test"])["source"] == "someone/rs-captions"

    def offline(name):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="not a local file or folder, and loading it as a Hub dataset failed"):
        load_corpus("someone/rs-captions")


def test_load_corpus_docstring_example_runs() -> None:
    import doctest

    import msa_hf.data.corpus as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


def _rewrite(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data["images"])
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("sentences", "expected"),
    [
        ("field", "\"sentences\" is str 'field'"),
        (None, '"sentences" is null None'),
        (7, '"sentences" is int 7'),
        ([{"raw": "a plane"}, {"text": "no raw here"}], 'sentences[1] has no "raw" text'),
        ([{"raw": "a plane"}, {"raw": 42}], 'sentences[1]["raw"] is int 42'),
        ([{"raw": None}], 'sentences[0]["raw"] is null None'),
        (["a plane", 3], "sentences[1] is int 3"),
    ],
)
def test_malformed_captions_are_validation_problems_naming_the_entry(make_karpathy, sentences, expected) -> None:
    path = _rewrite(
        make_karpathy(["train"] * 6 + ["val", "test"]), lambda images: images[2].update(sentences=sentences)
    )
    with pytest.raises(ValueError, match="malformed captions: 1") as error:
        load_corpus(path)
    message = str(error.value)
    assert str(path) in message and "images/3.jpg" in message and f"images[2]: {expected}" in message
    assert "empty or whitespace-only caption" not in message and "unusual number of captions" not in message
    corpus = load_corpus(path, on_bad="drop")
    names = [name for split in corpus.values() for name in split["file_name"]]
    assert "images/3.jpg" not in names and len(names) == 7
    assert all(len(captions) == 5 for split in corpus.values() for captions in split["captions"])


def test_entry_without_split_is_reported_never_moved_to_train(make_karpathy) -> None:
    path = _rewrite(make_karpathy(["train"] * 6 + ["val", "test", "test"]), lambda images: images[8].pop("split"))
    with pytest.raises(ValueError, match="entry without a split") as error:
        load_corpus(path)
    assert "images/9.jpg" in str(error.value)
    corpus = load_corpus(path, on_bad="drop")
    assert "images/9.jpg" not in [name for split in corpus.values() for name in split["file_name"]]
    assert corpus["test"]["file_name"] == ["images/8.jpg"] and corpus["train"].num_rows == 6
    # a file without any split field is one train pool (the missing splits are carved from it)
    no_splits = _rewrite(make_karpathy(["train"] * 10), lambda images: [image.pop("split") for image in images])
    assert sum(load_corpus(no_splits)[s].num_rows for s in ("train", "validation", "test")) == 10


def test_invalid_utf8_names_the_file(make_karpathy, tmp_path: Path) -> None:
    path = make_karpathy(["train"] * 4)
    path.write_bytes(path.read_bytes().replace(b"plane", b"pl\xe9ne"))
    with pytest.raises(ValueError, match="is not valid UTF-8") as error:
        load_corpus(path)
    assert str(path) in str(error.value)
    table = tmp_path / "table"
    table.mkdir()
    (table / "metadata.csv").write_bytes(b"file_name,caption\na.jpg,caf\xe9\n")
    with pytest.raises(ValueError, match=r"metadata\.csv is not valid UTF-8"):
        load_corpus(table)


def test_test_only_corpus_loads_with_empty_train(make_karpathy, caplog) -> None:
    path = make_karpathy(["test"] * 5)
    with caplog.at_level(logging.WARNING, logger="msa_hf.data"):
        corpus = load_corpus(path)
    assert [corpus[s].num_rows for s in corpus] == [0, 0, 5]
    info = corpus_info(corpus)
    assert "no train images" in info["train"]["empty_because"]
    assert "no train images to carve them from" in info["validation"]["empty_because"]
    assert info["test"]["empty_because"] is None
    assert "the validation split is empty" in caplog.text


def test_single_train_image_is_not_carved_away(make_karpathy) -> None:
    corpus = load_corpus(make_karpathy(["train"] + ["test"] * 3))
    assert [corpus[s].num_rows for s in corpus] == [1, 0, 3]
    assert "train split (1 images) is too small" in corpus_info(corpus["validation"])["empty_because"]
    # two missing splits and two train images: neither is carved (train keeps its images)
    corpus = load_corpus(make_karpathy(["train", "train"]))
    assert [corpus[s].num_rows for s in corpus] == [2, 0, 0]


def test_synth_folder_with_another_json_still_loads(tmp_path: Path) -> None:
    generate_synth_corpus(tmp_path / "rs", n_images=8, image_size=32)
    (tmp_path / "rs" / "stats.json").write_text(json.dumps({"images": 8}))
    assert sum(load_corpus(tmp_path / "rs")[s].num_rows for s in ("train", "validation", "test")) == 8
