"""Every bad-input case: a clear report (counts + first offending file names); "error" raises
it, "drop" drops exactly the offending images and says how many."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from msa_hf.data import CorpusValidationError, corpus_info, load_corpus


def _edit(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data["images"])
    path.write_text(json.dumps(data))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


CASES = {
    # name: (how to break the fixture, report line, offending file names)
    "missing": (lambda root, images: (root / "images" / "3.jpg").unlink(), "missing image file: 1", ["images/3.jpg"]),
    "truncated": (lambda root, images: _truncate(root / "images" / "4.jpg"), "unreadable image: 1", ["images/4.jpg"]),
    "not_an_image": (
        lambda root, images: (root / "images" / "5.jpg").write_text("hello"),
        "unreadable image: 1",
        ["images/5.jpg"],
    ),
    "empty_caption": (
        lambda root, images: images[1]["sentences"][2].update(raw=""),
        "empty or whitespace-only caption: 1",
        ["images/2.jpg"],
    ),
    "whitespace_caption": (
        lambda root, images: images[6]["sentences"][0].update(raw="  \t "),
        "empty or whitespace-only caption: 1",
        ["images/7.jpg"],
    ),
    "duplicate": (lambda root, images: images[9].update(filename="2.jpg"), "duplicate file name: 1", ["images/2.jpg"]),
    "caption_count": (
        lambda root, images: images[0]["sentences"].pop(),
        "unusual number of captions",
        ["images/1.jpg"],
    ),
}


def _break(corpus_json: Path, case: str) -> None:
    breaker = CASES[case][0]
    if case in ("missing", "truncated", "not_an_image"):
        breaker(corpus_json.parent, None)
    else:
        _edit(corpus_json, lambda images: breaker(corpus_json.parent, images))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_clear_report(karpathy_corpus: Path, case: str) -> None:
    _break(karpathy_corpus, case)
    with pytest.raises(CorpusValidationError) as info:
        load_corpus(karpathy_corpus)
    message = str(info.value)
    _, line, names = CASES[case]
    assert "1 of 12 images have problems" in message
    assert line in message
    for name in names:
        assert name in message
    assert 'on_bad="drop"' in message  # tells the user the way out
    assert info.value.report.bad_indices and len(info.value.report.bad_indices) == 1
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", list(CASES))
def test_drop_removes_exactly_the_bad_image_and_says_so(karpathy_corpus: Path, case: str, caplog) -> None:
    _break(karpathy_corpus, case)
    with caplog.at_level(logging.WARNING, logger="msa_hf.data"):
        corpus = load_corpus(karpathy_corpus, on_bad="drop")
    assert sum(corpus[s].num_rows for s in corpus) == 11
    assert "Dropped 1 of 12 images" in caplog.text
    assert CASES[case][1] in caplog.text
    assert corpus_info(corpus["train"])["dropped_images"] == 1
    kept = [name for s in corpus for name in corpus[s]["file_name"]]
    if case == "duplicate":  # the first occurrence stays, the repeat goes
        assert kept.count("images/2.jpg") == 1 and "images/10.jpg" not in kept
    else:
        assert CASES[case][2][0] not in kept
    for s in corpus:  # everything left decodes and has 5 non-empty captions
        for row in corpus[s]:
            row["image"].load()
            assert len(row["captions"]) == 5 and all(c.strip() for c in row["captions"])


def test_report_counts_several_problems_and_lists_first_offenders(make_karpathy) -> None:
    path = make_karpathy(["train"] * 14 + ["val", "test"])
    for i in (2, 3, 4, 5, 6, 7, 8):
        (path.parent / "images" / f"{i}.jpg").unlink()
    _edit(path, lambda images: images[0]["sentences"][1].update(raw=" "))
    with pytest.raises(CorpusValidationError) as info:
        load_corpus(path)
    report = info.value.report
    assert report.counts() == {"missing_image": 7, "empty_caption": 1}
    text = report.format(max_examples=5)
    assert "8 of 16 images have problems" in text
    assert "missing image file: 7" in text and "... and 2 more" in text
    assert "images/2.jpg" in text and "images/6.jpg" in text and "images/8.jpg" not in text
    assert "images/1.jpg" in text  # the empty caption


def test_caption_count_uses_the_corpus_usual_count(make_karpathy) -> None:
    path = make_karpathy(["train"] * 6 + ["val", "test"], captions=3)
    _edit(path, lambda images: images[4]["sentences"].append({"raw": "a fourth caption"}))
    with pytest.raises(CorpusValidationError, match=r"usual count is 3\)") as info:
        load_corpus(path)
    assert "images/5.jpg: 4 captions, expected 3" in str(info.value)


def test_check_images_false_still_finds_missing_files(karpathy_corpus: Path) -> None:
    _truncate(karpathy_corpus.parent / "images" / "4.jpg")
    corpus = load_corpus(karpathy_corpus, check_images=False)  # truncation is not looked for
    assert sum(corpus[s].num_rows for s in corpus) == 12
    (karpathy_corpus.parent / "images" / "3.jpg").unlink()
    with pytest.raises(CorpusValidationError, match="missing image file: 1"):
        load_corpus(karpathy_corpus, check_images=False)


@pytest.mark.parametrize("escape", ["../../secret/x.jpg", "absolute", "symlink"])
def test_image_paths_outside_the_corpus_folder_are_refused(karpathy_corpus: Path, tmp_path: Path, escape: str) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "x.jpg").write_bytes((karpathy_corpus.parent / "images" / "1.jpg").read_bytes())
    if escape == "absolute":
        filename = str(secret / "x.jpg")
    elif escape == "symlink":  # a link inside the corpus folder that points out of it
        (karpathy_corpus.parent / "images" / "link.jpg").symlink_to(secret / "x.jpg")
        filename = "link.jpg"
    else:  # from kp/images/: ../ is kp, ../../ is tmp_path
        filename = escape
    _edit(karpathy_corpus, lambda images: images[2].update(filename=filename))
    with pytest.raises(CorpusValidationError) as info:
        load_corpus(karpathy_corpus)
    message = str(info.value)
    assert "image path outside the corpus folder: 1" in message
    assert f"resolves to {secret / 'x.jpg'}, outside the corpus folder {karpathy_corpus.parent.resolve()}" in message
    assert "allow_outside_root=True to load_corpus" in message.splitlines()[-1]
    assert info.value.report.counts() == {"outside_root": 1}  # reported once, never opened as a missing image
    dropped = load_corpus(karpathy_corpus, on_bad="drop")
    assert sum(len(split) for split in dropped.values()) == 11
    allowed = load_corpus(karpathy_corpus, allow_outside_root=True)
    paths = [row["path"] for split in allowed.values() for row in split.cast_column("image", _raw())["image"]]
    assert sum(Path(p).resolve() == (secret / "x.jpg").resolve() for p in paths) == 1


def _raw():
    import datasets

    return datasets.Image(decode=False)


def test_imagefolder_file_names_stay_inside_the_folder(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "archive"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    rows = [{"file_name": "a.png", "caption": "a field"}, {"file_name": "../outside.png", "caption": "a road"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorpusValidationError, match=r"outside\.png: resolves to .*outside the corpus folder"):
        load_corpus(root)
