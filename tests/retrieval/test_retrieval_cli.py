"""msa-index / msa-search / msa-classify / msa-eval end to end on a tiny saved model.

Every failure case checks for a one-line ``prog: error: ...`` and no traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msa_hf.cli_utils import EXIT_FAILURE, EXIT_OK, EXIT_STALE, EXIT_USAGE
from msa_hf.retrieval.cli import classify_main, eval_main, index_main, search_main


def run(main, argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.fixture
def index_dir(image_folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "index"
    rc, stdout, err = run(
        index_main,
        ["build", image_folder, "--model", tiny_model_dir, "--out", out, "--batch-size", 4, "--no-progress"],
        capsys,
    )
    assert rc == 0, err
    assert "6 images" in stdout
    assert "msa-index: warning: Skipped 2 files" in err and "README.txt" in err and "broken.jpg" in err
    return out


def test_search_text_table_and_json(index_dir, capsys):
    rc, out, err = run(search_main, [index_dir, "two planes parked near a runway", "-k", 3], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "query: two planes parked near a runway"
    assert lines[1].split() == ["rank", "score", "path"]
    assert len(lines) == 3 + 3  # query, header, rule, 3 hits
    rc, out, err = run(search_main, [index_dir, "a plane", "-k", 2, "--json"], capsys)
    payload = json.loads(out)
    assert payload["query"] == "a plane" and payload["type"] == "text"
    scores = [r["score"] for r in payload["results"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)


def test_search_by_image_finds_itself(index_dir, image_folder, capsys):
    rc, out, err = run(search_main, [index_dir, "--image", image_folder / "tiles" / "e.jpg", "-k", 1, "--json"], capsys)
    assert rc == 0, err
    hit = json.loads(out)["results"][0]
    assert hit["relpath"] == "tiles/e.jpg" and hit["score"] == pytest.approx(1.0, abs=1e-5)


def test_search_faiss_backend_matches(index_dir, capsys):
    pytest.importorskip("faiss")
    _, a, _ = run(search_main, [index_dir, "a harbor with boats", "-k", 6, "--json"], capsys)
    _, b, _ = run(search_main, [index_dir, "a harbor with boats", "-k", 6, "--json", "--backend", "faiss"], capsys)
    ra, rb = json.loads(a)["results"], json.loads(b)["results"]
    assert [r["row"] for r in ra] == [r["row"] for r in rb]
    np.testing.assert_allclose([r["score"] for r in ra], [r["score"] for r in rb], atol=1e-5)


def test_search_with_another_model_fails_clearly(index_dir, other_model_dir, capsys):
    rc, _out, err = run(search_main, [index_dir, "a plane", "--model", other_model_dir], capsys)
    assert rc == EXIT_USAGE
    assert "msa-search: error: Index" in err and "was built with model" in err
    assert "msa-index build" in err  # says how to fix it


def test_index_status_info_and_rebuild(make_images, index_dir, image_folder, tiny_model_dir, capsys):
    rc, out, _ = run(index_main, ["status", index_dir], capsys)
    assert rc == 0 and "up to date" in out
    make_images(image_folder, ["new.png"], seed=50)
    rc, out, _ = run(index_main, ["status", index_dir], capsys)
    assert rc == EXIT_STALE and "1 new" in out and "added: new.png" in out
    assert f"msa-index build {image_folder.resolve()} --out {index_dir}" in out
    rc, out, _ = run(
        index_main, ["build", image_folder, "--model", tiny_model_dir, "--out", index_dir, "--no-progress"], capsys
    )
    assert rc == 0 and "7 images" in out and "6 reused" in out
    rc, out, _ = run(index_main, ["info", index_dir, "--json"], capsys)
    info = json.loads(out)
    assert info["num_images"] == 7 and info["model"]["name_or_path"] == str(Path(tiny_model_dir).resolve())


def test_stale_hit_warns(index_dir, image_folder, capsys):
    (image_folder / "a.png").unlink()
    rc, _out, err = run(search_main, [index_dir, "a plane", "-k", 6], capsys)
    assert rc == EXIT_OK and "a.png: missing since it was indexed" in err
    assert f"msa-index build {image_folder.resolve()} --out" in err


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["build", "{empty}", "--model", "{model}", "--out", "{tmp}/i"], EXIT_USAGE, "No image files found in"),
        (["build", "{tmp}/missing", "--model", "{model}", "--out", "{tmp}/i"], EXIT_USAGE, "missing does not exist"),
        (["build", "{model}/config.json", "--model", "{model}", "--out", "{tmp}/i"], EXIT_USAGE, "is not a folder"),
        (["build", "{images}", "--model", "{tmp}", "--out", "{tmp}/i"], EXIT_USAGE, "has no config.json"),
        (
            ["build", "{images}", "--model", "{model}", "--out", "{tmp}/i", "--relocate", "--overwrite"],
            EXIT_USAGE,
            "give one of them",
        ),
        (["info", "{tmp}/nothing"], EXIT_USAGE, "does not exist"),
        (["info", "{empty}"], EXIT_USAGE, "is not an MSA image index"),
    ],
)
def test_index_errors(argv, code, message, tmp_path, tiny_model_dir, image_folder, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(empty=empty, model=tiny_model_dir, tmp=tmp_path, images=image_folder) for a in argv]
    rc, _out, err = run(index_main, argv, capsys)
    assert rc == code
    assert (
        re.search(r"^msa-index( build| info)?: error:", err, flags=re.M) and message in err
    )  # argparse names the subcommand


def test_search_argument_errors(index_dir, tmp_path, capsys):
    rc, _, err = run(search_main, [index_dir], capsys)
    assert rc == EXIT_USAGE and "give a text QUERY or --image" in err
    rc, _, err = run(search_main, [index_dir, "--image", tmp_path / "nope.png"], capsys)
    assert rc == EXIT_USAGE and "nope.png does not exist (expected an image file)" in err
    rc, _, err = run(search_main, [index_dir, "x", "-k", 0], capsys)
    assert rc == EXIT_USAGE and "-k must be >= 1" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not png")
    rc, _, err = run(search_main, [index_dir, "--image", bad], capsys)
    assert rc == EXIT_USAGE and "cannot decode image" in err and "bad.png" in err


def test_a_query_longer_than_the_model_reads_is_said_to_be_truncated(index_dir, capsys):
    long_query = "two planes parked beside a runway near the terminal " * 200
    rc, out, err = run(search_main, [index_dir, long_query, "-k", 2], capsys)
    assert rc == EXIT_OK and "query: two planes" in out
    assert "msa-search: warning: The query is longer than the 16 tokens the model reads; it was truncated" in err
    rc, _, err = run(search_main, [index_dir, "two planes", long_query, "-k", 2], capsys)
    assert rc == EXIT_OK and "Query 2 is longer than" in err and "Query 1" not in err
    rc, _, err = run(search_main, [index_dir, "two planes parked beside a runway", "-k", 2], capsys)
    assert rc == EXIT_OK and "truncated" not in err


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_refused(index_dir, query, capsys):
    rc, out, err = run(search_main, [index_dir, query], capsys)
    assert rc == EXIT_USAGE and out == ""
    assert "msa-search: error: The query is empty" in err
    rc, out, err = run(search_main, [index_dir, "a plane", query], capsys)
    assert rc == EXIT_USAGE and "Query 2 is empty" in err


def test_interrupted_index_is_reported(index_dir, capsys):
    (index_dir / "manifest.json").unlink()
    (index_dir / ".partial").mkdir()
    rc, _, err = run(search_main, [index_dir, "a plane"], capsys)
    assert rc == EXIT_USAGE and "incomplete" in err and "resume" in err


# ---------------------------------------------------------------------------- msa-classify


def test_classify_with_accuracy(class_folder, tiny_model_dir, tmp_path, capsys):
    out_json = tmp_path / "probs.json"
    rc, out, err = run(
        classify_main,
        [
            class_folder,
            "--model",
            tiny_model_dir,
            "--labels",
            "airport,farmland,dense residential,harbor",
            "--template",
            "an aerial image of {}",
            "--template",
            "a satellite photo of {}",
            "--json",
            "--output",
            out_json,
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 0, err
    payload = json.loads(out)
    assert payload["labels"] == ["airport", "farmland", "dense residential", "harbor"]
    assert payload["num_images"] == 4
    truth = {r["file"]: r["label"] for r in payload["images"]}
    assert truth["Dense_Residential/1.png"] == "dense residential" and truth["airport/2.png"] == "airport"
    hits = sum(r["label"] == r["prediction"] for r in payload["images"])
    assert payload["accuracy"] == pytest.approx(100 * hits / 4)
    full = json.loads(out_json.read_text())
    for row in full["images"]:
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert len(row["probs"]) == 4


def test_classify_labels_from_folders_and_table(class_folder, tiny_model_dir, tmp_path, capsys):
    rc, out, err = run(
        classify_main,
        [class_folder, "--model", tiny_model_dir, "--no-progress", "--output", tmp_path / "p.csv"],
        capsys,
    )
    assert rc == 0, err
    assert "accuracy:" in out and "over 4 images" in out
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["file", "label", "prediction"] and len(rows) == 5


def test_classify_flat_folder_without_labels_fails(image_folder, tiny_model_dir, capsys):
    rc, _, err = run(classify_main, [image_folder, "--model", tiny_model_dir, "--no-progress"], capsys)
    assert rc == EXIT_USAGE and "--labels is required" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labels", "airport"], "at least two labels"),
        (["--labels", "airport,,farm"], "empty label"),
        (["--labels", "Airport,airport"], "duplicates"),
        (["--labels", "a,b", "--template", "no placeholder"], "exactly one '{}'"),
        (["--labels", "a,b", "--template", "{} {0}"], "Template '{} {0}' must contain exactly one '{}'"),
        (["--labels", "a,b", "--template", "an {} of {kind}"], "no other {...} field"),
        (["--labels", "a,b", "--template", "a { {}"], "literal brace"),
        (["--scale", "nan"], "--scale) must be a finite number > 0, got nan"),
        (["--scale", "inf"], "got inf"),
        (["--scale", "0"], "got 0.0"),
    ],
)
def test_classify_bad_arguments(extra, message, class_folder, tiny_model_dir, capsys):
    rc, out, err = run(classify_main, [class_folder, "--model", tiny_model_dir, "--no-progress", *extra], capsys)
    assert rc == EXIT_USAGE and message in err and "accuracy" not in out
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- msa-eval


@pytest.fixture
def corpus_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    words = ["plane", "runway", "ship", "harbor", "field", "trees", "road", "cars"]

    def split(n, offset):
        images = [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(n)]
        caps = [[f"a {words[(i + r) % 8]} near the {words[(i * 3 + r) % 8]}" for r in range(5)] for i in range(n)]
        return datasets.Dataset.from_dict(
            {
                "image": images,
                "captions": caps,
                "image_id": list(range(offset, offset + n)),
                "file_name": [f"{offset + i}.png" for i in range(n)],
            },
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "captions": datasets.Sequence(datasets.Value("string")),
                    "image_id": datasets.Value("int64"),
                    "file_name": datasets.Value("string"),
                }
            ),
        )

    dd = datasets.DatasetDict({"train": split(4, 0), "validation": split(3, 4), "test": split(6, 7)})
    out = tmp_path / "corpus"
    dd.save_to_disk(str(out))
    return out


def test_eval_writes_table_json_and_png(corpus_dir, tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    rc, out, err = run(
        eval_main,
        [
            "--model",
            tiny_model_dir,
            "--corpus",
            corpus_dir,
            "--split",
            "test",
            "--output-dir",
            out_dir,
            "--no-progress",
            "--num-examples",
            2,
        ],
        capsys,
    )
    assert rc == 0, err
    assert "image->text" in out and "text->image" in out and "mR =" in out
    report = json.loads((out_dir / "metrics.json").read_text())
    m = report["metrics"]
    assert m["num_images"] == 6 and m["num_captions"] == 30
    assert set(m) >= {
        "i2t_r1",
        "i2t_r5",
        "i2t_r10",
        "t2i_r1",
        "t2i_r5",
        "t2i_r10",
        "mr",
        "i2t_medr",
        "i2t_meanr",
        "t2i_medr",
        "t2i_meanr",
    }
    assert m["t2i_r10"] == 100.0  # 6 images: every caption's image is in its top 10 (30 captions need not be)
    assert report["split"] == "test" and len(report["model"]["weights_sha256"]) == 64
    png = Image.open(out_dir / "retrieval_examples.png")
    assert png.width > 600 and png.height > 300


def test_eval_matches_python_api(corpus_dir, tiny_model, tiny_processor):
    import datasets

    from msa_hf.retrieval import encode_images, encode_texts, evaluate_corpus, retrieval_metrics

    test = datasets.load_from_disk(str(corpus_dir))["test"]
    result = evaluate_corpus(tiny_model, tiny_processor, test, progress=False)
    img = encode_images(tiny_model, tiny_processor, test["image"], progress=False)
    caps = [c for cs in test["captions"] for c in cs]
    txt = encode_texts(tiny_model, tiny_processor, caps, progress=False)
    expected = retrieval_metrics(img @ txt.t(), np.repeat(np.arange(6), 5))
    assert result.metrics == pytest.approx(expected)


def test_eval_ties_argsort_is_the_published_order_and_every_rule_is_described(
    corpus_dir, tiny_model_dir, tiny_model, tiny_processor, tmp_path, capsys
):
    import datasets

    from msa_hf.retrieval import TIE_RULES, evaluate_corpus, retrieval_metrics
    from msa_hf.retrieval.cli import TIE_RULE_PROTOCOL

    assert set(TIE_RULE_PROTOCOL) == set(TIE_RULES)
    out_dir = tmp_path / "eval-argsort"
    args = ["--model", tiny_model_dir, "--corpus", corpus_dir, "--split", "test", "--output-dir", out_dir]
    rc, _, err = run(eval_main, [*args, "--no-progress", "--num-examples", 0, "--ties", "argsort"], capsys)
    assert rc == 0, err
    report = json.loads((out_dir / "metrics.json").read_text())
    assert report["ties"] == "argsort" and "np.argsort(scores)[::-1]" in report["protocol"]
    result = evaluate_corpus(
        tiny_model, tiny_processor, datasets.load_from_disk(str(corpus_dir))["test"], progress=False
    )
    similarity = (result.image_embeds @ result.text_embeds.t()).numpy()
    assert report["metrics"] == pytest.approx(retrieval_metrics(similarity, result.caption_image_ids, ties="argsort"))
    by_rule = result.metrics_by_tie_rule()
    assert set(by_rule) == set(TIE_RULES) and by_rule["pessimistic"] == pytest.approx(result.metrics)
    assert by_rule["argsort"] == pytest.approx(report["metrics"])


def test_evaluate_corpus_takes_a_split_or_a_view_and_loader_workers(corpus_dir, tiny_model, tiny_processor):
    import datasets
    import torch

    from msa_hf.data import evaluation_view
    from msa_hf.retrieval import evaluate_corpus

    test = datasets.load_from_disk(str(corpus_dir))["test"]
    plain = evaluate_corpus(tiny_model, tiny_processor, test, batch_size=4, progress=False)
    view = evaluate_corpus(
        tiny_model, tiny_processor, evaluation_view(test), batch_size=4, num_workers=2, progress=False
    )
    assert view.metrics == plain.metrics and torch.equal(view.image_embeds, plain.image_embeds)
    assert view.image_ids.tolist() == test["image_id"]
    head = evaluate_corpus(tiny_model, tiny_processor, evaluation_view(test), max_images=2, progress=False)
    assert head.metrics["num_images"] == 2 and head.metrics["num_captions"] == 10
    torch.testing.assert_close(head.image_embeds, plain.image_embeds[:2])


def test_evaluate_corpus_names_an_image_it_cannot_decode(tmp_path, tiny_model, tiny_processor):
    import datasets

    from msa_hf.retrieval import evaluate_corpus

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (16, 16), "blue").save(good)
    bad.write_bytes(b"not an image")
    split = datasets.Dataset.from_dict(
        {"image": [str(good), str(bad)], "captions": [["a"], ["b"]], "image_id": [7, 8]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "captions": datasets.Sequence(datasets.Value("string")),
                "image_id": datasets.Value("int64"),
            }
        ),
    )
    with pytest.raises(ValueError, match=r"image_id 8: cannot decode image .*bad\.png"):
        evaluate_corpus(tiny_model, tiny_processor, split, progress=False)


def test_eval_bad_split(corpus_dir, tiny_model_dir, capsys):
    rc, _, err = run(eval_main, ["--model", tiny_model_dir, "--corpus", corpus_dir, "--split", "dev"], capsys)
    assert rc == EXIT_USAGE and "--split 'dev' is not in corpus" in err and "test" in err


# ---------------------------------------------------------------------------- archives that move, builds that collide


def test_moved_archive_is_relocated(index_dir, image_folder, tiny_model_dir, tmp_path, capsys):
    moved = tmp_path / "moved"
    image_folder.rename(moved)
    rc, _, err = run(index_main, ["status", index_dir], capsys)
    assert rc == EXIT_USAGE and "no longer exists" in err and f"--out {index_dir} --relocate" in err
    rc, _, err = run(search_main, [index_dir, "a plane", "-k", 2], capsys)
    assert rc == EXIT_OK and "no longer exists" in err and "--relocate" in err
    build = ["build", moved, "--model", tiny_model_dir, "--out", index_dir, "--no-progress"]
    rc, _, err = run(index_main, build, capsys)
    assert rc == EXIT_USAGE and "pass --relocate" in err
    rc, out, err = run(index_main, [*build, "--relocate"], capsys)
    assert rc == EXIT_OK and "0 encoded, 6 reused" in out, err
    rc, out, _ = run(index_main, ["status", index_dir], capsys)
    assert rc == EXIT_OK and "up to date" in out


_HOLD_LOCK = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("io_utils", sys.argv[1])
io_utils = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io_utils)
with io_utils.exclusive_lock(sys.argv[2], purpose="msa-index build of another archive"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_concurrent_build_is_refused_and_a_dead_holder_taken_over(image_folder, tiny_model_dir, tmp_path, capsys):
    import signal
    import subprocess
    import sys

    import msa_hf.io_utils

    out = tmp_path / "index"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, msa_hf.io_utils.__file__, str(out / ".lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        build = ["build", image_folder, "--model", tiny_model_dir, "--out", out, "--no-progress"]
        rc, _, err = run(index_main, build, capsys)
        assert rc == EXIT_FAILURE
        assert f"is in use by pid {holder.pid} on host" in err and "msa-index build of another archive" in err
        assert not (out / "manifest.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").exists()  # the killed holder could not clean up
    rc, out_text, err = run(index_main, build, capsys)
    assert rc == EXIT_OK and "6 images" in out_text
    assert f"Took over the lock {out / '.lock'} left by pid {holder.pid}" in err
    assert not (out / ".lock").exists()


def test_eval_refuses_a_bad_corpus_naming_its_own_flags(tiny_model_dir, tmp_path, capsys, caplog):
    from msa_hf.data import generate_synth_corpus

    path = generate_synth_corpus(tmp_path / "corpus", n_images=8, image_size=16)
    meta = json.loads(path.read_text())
    meta["images"][0]["filename"] = "../../outside.png"
    missing = path.parent / "images" / meta["images"][1]["filename"]
    missing.unlink()
    path.write_text(json.dumps(meta))
    argv = ["--model", tiny_model_dir, "--corpus", path, "--split", "train", "--no-progress", "--num-examples", 0]
    rc, _, err = run(eval_main, [*argv, "--output-dir", tmp_path / "e1"], capsys)
    assert rc == EXIT_USAGE and "missing image file: 1" in err and "outside the corpus folder: 1" in err
    errors = [line for line in err.splitlines() if line.startswith("msa-eval: error:")]
    assert len(errors) == 1 and "pass --on-bad drop to drop these images" in errors[0]
    assert "pass --allow-outside-root" in errors[0] and "load_corpus" not in err
    rc, _out, err = run(eval_main, [*argv, "--output-dir", tmp_path / "e2", "--on-bad", "drop"], capsys)
    assert rc == EXIT_OK and "Dropped 2 of 8 images" in caplog.text, err
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["dropped_images"] == 2
