"""rs-synth: deterministic, multi-scale, 5 varied captions per image that match the scene."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from msa_hf.data import SYNTH_JSON_NAME, ensure_synth_corpus, generate_synth_corpus, load_corpus, render_scene
from msa_hf.data.synth import SceneRenderer
from msa_hf.data.synth.captions import NUMBER_WORDS


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _content_digest(folder: Path) -> str:
    """One SHA-256 over every file's name and content, PNGs by their decoded pixels.

    Pixels rather than PNG bytes, so that a Pillow built against another zlib (which may
    compress the same pixels differently) does not fail the test.
    """
    from PIL import Image

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            if path.suffix == ".png":
                with Image.open(path) as image:
                    digest.update(image.mode.encode() + np.asarray(image).tobytes())
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest()


# Recorded with the single-module generator before it was split into the synth/ package
# (commit 8df3353): the split must not change a byte of the corpus. Seed 9 at 32 px with one
# scene per layout covers every archetype, structure, linear feature and object site; the
# second corpus has four siblings per layout (the object plans).
RECORDED_DIGESTS = [
    (
        {"n_images": 32, "image_size": 32, "seed": 9, "variants_per_layout": 1},
        "ec137cc3a2678e0375f9a38fd24deaf41d4539b53580e4f564006fb187c21010",
    ),
    (
        {"n_images": 16, "image_size": 48, "seed": 0, "variants_per_layout": 4},
        "6a98d656eb79f0ba279edd33ca11619fd06cdc8d27194ad578e4239450356c53",
    ),
]


@pytest.mark.parametrize(("arguments", "expected"), RECORDED_DIGESTS)
def test_corpus_matches_the_digest_recorded_before_the_package_split(tmp_path: Path, arguments, expected) -> None:
    path = generate_synth_corpus(tmp_path / "rs", **arguments)
    assert _content_digest(path.parent) == expected


def test_recorded_corpus_covers_every_kind_of_content(tmp_path: Path) -> None:
    arguments = RECORDED_DIGESTS[0][0]
    meta = json.loads(generate_synth_corpus(tmp_path / "rs", **arguments).read_text())
    scenes = [entry["scene"] for entry in meta["images"]]
    assert len({s["archetype"] for s in scenes}) == 7
    assert {f for s in scenes for f in s["features"]} == {
        "river",
        "coastline",
        "lake",
        "road",
        "two roads",
        "runway",
        "bridge",
    }
    assert len({x["kind"] for s in scenes for x in s["structures"]}) == 8
    sites = {f"{kind}@{obj['where']}" for s in scenes for kind, obj in s["objects"].items()}
    assert {"ship@docked", "ship@sea", "ship@river", "ship@lake", "car@road", "car@parking lot"} <= sites


@pytest.fixture(scope="module")
def synth40(tmp_path_factory) -> Path:
    return generate_synth_corpus(tmp_path_factory.mktemp("synth") / "rs", n_images=40, seed=7, image_size=64)


def test_same_seed_gives_byte_identical_files(tmp_path: Path, synth40: Path) -> None:
    again = generate_synth_corpus(tmp_path / "again", n_images=40, seed=7, image_size=64)
    first, second = _digest(synth40.parent), _digest(again.parent)
    assert len(first) == 41 and first == second
    other = generate_synth_corpus(tmp_path / "other", n_images=40, seed=8, image_size=64)
    changed = _digest(other.parent)
    assert sum(first[k] != changed[k] for k in first) >= 40


def test_scene_depends_only_on_seed_and_index(synth40: Path) -> None:
    # image i is the same whether the corpus has 40 images or just scene i is rendered
    from PIL import Image

    scene = render_scene(13, seed=7, image_size=64)
    stored = np.asarray(Image.open(synth40.parent / "images" / "00013.png"))
    assert np.array_equal(np.asarray(scene.image), stored)
    meta = json.loads(synth40.read_text())
    assert [s["raw"] for s in meta["images"][13]["sentences"]] == scene.captions


def test_karpathy_layout_and_group_splits(synth40: Path) -> None:
    meta = json.loads(synth40.read_text())
    assert meta["dataset"] == "rs-synth" and meta["seed"] == 7 and meta["n_images"] == 40
    images = meta["images"]
    assert [e["filename"] for e in images] == [f"{i:05d}.png" for i in range(40)]
    assert all(e["filepath"] == "images" and len(e["sentences"]) == 5 for e in images)
    assert Counter(e["split"] for e in images) == {"train": 32, "val": 4, "test": 4}
    by_group: dict[int, set[str]] = {}
    for e in images:
        by_group.setdefault(e["layout_id"], set()).add(e["split"])
    assert all(len(s) == 1 for s in by_group.values()), "siblings sharing a layout must share a split"
    sentids = [s["sentid"] for e in images for s in e["sentences"]]
    assert sentids == list(range(200))


def test_siblings_share_the_large_layout_but_differ_in_small_objects() -> None:
    scenes = [render_scene(i, seed=0, image_size=224) for i in range(8, 12)]  # one layout group
    assert len({s.layout_id for s in scenes}) == 1
    pixels = [np.asarray(s.image).astype(int) for s in scenes]
    for k in range(1, 4):
        differs = np.abs(pixels[k] - pixels[0]).sum(-1) > 0
        assert 0.002 < differs.mean() < 0.2, "siblings differ only where the small objects are"
    primary = [next(iter(s.scene["objects"].items())) for s in scenes]
    assert len({kind for kind, _ in primary}) == 1
    assert len({obj["count"] for _, obj in primary}) == 4, "siblings have distinct object counts"
    assert len({s.scene["land_cover"] for s in scenes}) == 1


def _count_words(n: int) -> set[str]:
    if n >= 10:
        return {"many", "lots of", "a lot of", "dozens of", "ten or more"}
    return {"a", "one"} if n == 1 else {NUMBER_WORDS[n]}


def test_captions_state_the_drawn_counts_and_mix_scales() -> None:
    distinct, total, with_objects = set(), 0, 0
    kinds_seen, land_seen, structures_seen = Counter(), Counter(), Counter()
    for i in range(0, 240, 3):
        scene = render_scene(i, seed=1, image_size=32)  # small images: captions do not depend on size
        assert len(scene.captions) == 5
        assert all(c.strip() and c == c.lower() for c in scene.captions)
        total += 5
        distinct.update(scene.captions)
        land_seen[scene.scene["land_cover"]] += 1
        structures_seen.update(s["kind"] for s in scene.scene["structures"])
        objects = scene.scene["objects"]
        if not objects:
            continue
        kind, obj = next(iter(objects.items()))
        kinds_seen.update(list(objects))
        noun = {"plane": "(air)?plane", "ship": "(ship|boat)", "car": "(car|vehicle)", "tank": "tank"}[kind]
        words = "|".join(sorted(_count_words(obj["count"]), key=len, reverse=True))
        mentions = [c for c in scene.captions if re.search(rf"\b({words})\b(\s+\w+){{0,2}}\s+{noun}", c)]
        if len(set(obj["colours"])) > 1 and obj["count"] < 12:  # mixed colours are counted per colour
            mentions += [c for c in scene.captions if " and " in c and re.search(noun, c)]
        assert len(mentions) >= 2, (scene.scene, scene.captions)
        with_objects += 1
    assert with_objects >= 75
    assert len(distinct) >= total / 2, "at least half of all captions distinct"
    assert set(kinds_seen) == {"plane", "ship", "car", "tank"}
    assert len(land_seen) >= 5
    assert len(structures_seen) >= 6


def test_ensure_synth_corpus_generates_once_and_checks_parameters(tmp_path: Path) -> None:
    target = tmp_path / "corpus"
    path = ensure_synth_corpus(target, n_images=8, seed=2, image_size=32, progress=False)
    assert path == target / SYNTH_JSON_NAME and path.is_file()
    stamp = os.stat(path).st_mtime_ns
    assert ensure_synth_corpus(target, n_images=8, seed=2, image_size=32, progress=False) == path
    assert os.stat(path).st_mtime_ns == stamp, "an existing corpus is reused, not rewritten"
    with pytest.raises(ValueError, match="made with"):
        ensure_synth_corpus(target, n_images=9, seed=2, image_size=32, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"], "no temporary folders left behind"
    corpus = load_corpus(path)
    assert sum(corpus[s].num_rows for s in corpus) == 8


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = SceneRenderer.__call__

    def failing(self, index):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(SceneRenderer, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_synth_corpus(tmp_path / "corpus", n_images=8, image_size=32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_to_clobber(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synth_corpus(tmp_path / "data", n_images=4, image_size=32)
    with pytest.raises(FileExistsError, match="holds no rs-synth corpus"):  # overwrite replaces only a synth output
        generate_synth_corpus(tmp_path / "data", n_images=4, image_size=32, overwrite=True)
    assert (tmp_path / "data" / "keep.txt").read_text() == "mine"
    (tmp_path / "data" / "keep.txt").unlink()
    path = generate_synth_corpus(tmp_path / "data", n_images=4, image_size=32)
    path = generate_synth_corpus(tmp_path / "data", n_images=6, image_size=32, overwrite=True)
    assert len(json.loads(path.read_text())["images"]) == 6
    (tmp_path / "empty").mkdir()  # an empty folder is fine to fill
    assert generate_synth_corpus(tmp_path / "empty", n_images=4, image_size=32).is_file()
    with pytest.raises(ValueError, match="n_images"):
        generate_synth_corpus(tmp_path / "x", n_images=0)


def test_overwrite_keeps_files_the_synth_run_did_not_write(tmp_path: Path) -> None:
    """A thesis.tex beside an earlier corpus, or an extra image in its images/, is not the generator's to delete."""
    out = tmp_path / "data"
    generate_synth_corpus(out, n_images=4, image_size=32)
    (out / "thesis.tex").write_text("\\documentclass{article}")
    (out / "images" / "mine.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"did not write \(images/mine\.png, thesis\.tex\)"):
        generate_synth_corpus(out, n_images=4, image_size=32, overwrite=True)
    assert (out / "thesis.tex").is_file() and (out / "images" / "mine.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging debris
