"""Training view (one row per pair), evaluation view (caption -> image index) and the collator,
with the real MSAProcessor (tests/conftest.py's ``tiny_processor``)."""

from __future__ import annotations

import datasets
import pytest
import torch
from torch.utils.data import DataLoader

from msa_hf.data import MSADataCollator, evaluation_view, load_corpus, training_view


@pytest.fixture
def corpus(make_karpathy) -> datasets.DatasetDict:
    # 6 train / 2 val / 3 test .tif images with 5 captions each; image 2 is a 16-bit TIFF
    return load_corpus(make_karpathy(["train"] * 6 + ["val"] * 2 + ["test"] * 3, ext="tif", sixteen_bit=(1,)))


def test_training_view_has_one_row_per_pair(corpus, caption_of) -> None:
    train = corpus["train"]
    pairs = training_view(train)
    assert pairs.num_rows == 5 * train.num_rows
    assert set(pairs.column_names) == {"image", "caption", "image_id", "file_name"}
    assert isinstance(pairs.features["image"], datasets.Image) and pairs.features["image"].decode
    ids = pairs["image_id"]
    assert ids == [i for i in train["image_id"] for _ in range(5)]
    first_image = train[0]["image_id"]
    assert pairs["caption"][:5] == [caption_of(first_image, k) for k in range(5)]
    # still paths, not pixels: decoding waits for row access (in the loader workers)
    stored = pairs.data.column("image").to_pylist()
    assert all(s["bytes"] is None and s["path"].endswith(".tif") for s in stored)
    assert pairs[7]["image"].size == (32, 32)


def test_evaluation_view_maps_captions_to_image_rows(corpus) -> None:
    test = corpus["test"]
    view = evaluation_view(test)
    assert view.num_images == 3 and view.num_captions == 15
    assert view.caption_image_ids.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert view.image_ids.tolist() == test["image_id"]
    assert view.captions[5:10] == test[1]["captions"]
    assert view.images.column_names == ["image", "image_id"]


def test_evaluation_view_handles_ragged_caption_counts() -> None:
    ds = datasets.Dataset.from_dict(
        {"image": [None, None, None], "captions": [["a"], ["b", "c", "d"], []], "image_id": [10, 11, 12]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "captions": datasets.List(datasets.Value("string")),
                "image_id": datasets.Value("int64"),
            }
        ),
    )
    view = evaluation_view(ds)
    assert view.captions == ["a", "b", "c", "d"]
    assert view.caption_image_ids.tolist() == [0, 1, 1, 1]


def test_collator_batches_training_rows_with_the_real_processor(corpus, tiny_processor) -> None:
    pairs = training_view(corpus["train"])
    rows = [pairs[i] for i in (0, 1, 5, 6, 12)]  # includes the 16-bit TIFF (image 2, rows 5..9)
    batch = MSADataCollator(tiny_processor)(rows)
    size = tiny_processor.image_processor.image_size
    assert batch["pixel_values"].shape == (5, 3, size, size)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 5
    assert batch["image_ids"].dtype == torch.long
    assert batch["image_ids"].tolist() == [r["image_id"] for r in rows]
    # one batched call gives what the processor gives for the same inputs
    direct = tiny_processor(images=[r["image"] for r in rows], text=[r["caption"] for r in rows], return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values"], direct["pixel_values"])
    assert torch.equal(batch["input_ids"], direct["input_ids"])
    # the 16-bit image is stretched, not clipped to white
    assert batch["pixel_values"][2].std() > 0.1


def test_collator_calls_the_processor_once_per_batch(corpus, tiny_processor) -> None:
    calls = []

    def spy(**kwargs):
        calls.append(kwargs)
        return tiny_processor(**kwargs)

    pairs = training_view(corpus["train"])
    MSADataCollator(spy)([pairs[i] for i in range(8)])
    assert len(calls) == 1 and len(calls[0]["images"]) == 8 and len(calls[0]["text"]) == 8


def test_dataloader_decodes_in_workers(corpus, tiny_processor) -> None:
    pairs = training_view(corpus["train"])
    loader = DataLoader(
        pairs,
        batch_size=7,
        shuffle=True,
        num_workers=2,
        collate_fn=MSADataCollator(tiny_processor),
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in loader:
        assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0] == batch["image_ids"].shape[0]
        seen += batch["image_ids"].tolist()
    assert sorted(seen) == sorted(pairs["image_id"])


def test_eval_loaders_keep_order(corpus, tiny_processor) -> None:
    view = evaluation_view(corpus["test"])
    images = list(view.image_loader(tiny_processor, batch_size=2))
    assert [b["pixel_values"].shape[0] for b in images] == [2, 1]
    assert torch.cat([b["image_ids"] for b in images]).tolist() == view.image_ids.tolist()
    captions = list(view.caption_loader(tiny_processor, batch_size=4))
    assert sum(b["input_ids"].shape[0] for b in captions) == 15
    assert set(captions[0]) == {"input_ids", "attention_mask"}
    expected = tiny_processor(text=view.captions[:4], return_tensors="pt")["input_ids"]
    assert torch.equal(captions[0]["input_ids"], expected)


def test_collator_decodes_undecoded_images_and_rejects_unknown_rows(corpus, tiny_processor) -> None:
    raw = corpus["train"].cast_column("image", datasets.Image(decode=False))
    batch = MSADataCollator(tiny_processor, text_column=None)([raw[0], raw[1]])
    assert batch["pixel_values"].shape[0] == 2 and "input_ids" not in batch
    with pytest.raises(ValueError, match="neither 'image' nor 'caption'"):
        MSADataCollator(tiny_processor)([{"foo": 1}])
    with pytest.raises(ValueError, match="empty batch"):
        MSADataCollator(tiny_processor)([])


def test_views_reject_foreign_datasets() -> None:
    ds = datasets.Dataset.from_dict({"x": [1]})
    with pytest.raises(ValueError, match="training_view needs a corpus split with columns"):
        training_view(ds)
    with pytest.raises(ValueError, match="evaluation_view needs a corpus split with columns"):
        evaluation_view(ds)


def test_collated_training_batch_feeds_the_model_loss(corpus, tiny_processor, tiny_model) -> None:
    pairs = training_view(corpus["train"])
    batch = MSADataCollator(tiny_processor)([pairs[i] for i in range(0, 30, 3)])
    with torch.no_grad():
        out = tiny_model(**batch, return_loss=True)
    assert out.logits_per_image.shape == (10, 10)
    assert torch.isfinite(out.loss)


def test_image_list_loader_skips_and_lists_bad_files(tmp_path, tiny_processor) -> None:
    from PIL import Image

    from msa_hf.data.views import ImageListView, image_loader

    Image.new("RGB", (20, 20), "red").save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    view = ImageListView(["good.png", "bad.png", "missing.png", "good.png"], tmp_path, hash_files=True)
    loader = image_loader(
        view, tiny_processor, batch_size=4, id_column="row", keep_columns=("sha256",), on_error="skip"
    )
    (batch,) = list(loader)
    assert batch["image_ids"].tolist() == [0, 3] and batch["pixel_values"].shape[0] == 2
    assert batch["sha256"][0] == batch["sha256"][1] and len(batch["sha256"][0]) == 64
    failures = dict(batch["failures"])
    assert set(failures) == {1, 2}
    assert "cannot decode image" in failures[1] and "bad.png" in failures[1]
    assert "cannot read" in failures[2] and "missing.png" in failures[2]
    strict = image_loader(ImageListView(["bad.png"], tmp_path), tiny_processor, id_column="row")
    with pytest.raises(ValueError, match="bad.png"):
        list(strict)


def test_collator_leaves_out_only_the_image_the_processor_refuses(tiny_processor) -> None:
    import numpy as np

    from msa_hf.data.views import ImageListView

    good = np.zeros((8, 8, 3), dtype=np.uint8)
    wrong_bands = np.zeros((8, 8, 7), dtype=np.uint8)  # 7 bands: the processor refuses it
    rows = [ImageListView([good, wrong_bands, good])[i] for i in range(3)]
    batch = MSADataCollator(tiny_processor, text_column=None, id_column="row", on_error="skip")(rows)
    assert batch["image_ids"].tolist() == [0, 2] and batch["pixel_values"].shape[0] == 2
    ((row, reason),) = batch["failures"]
    assert row == 1 and "cannot preprocess image" in reason


def test_collator_decodes_at_the_processor_size(tmp_path, tiny_processor) -> None:
    from PIL import Image

    from msa_hf.data.views import ImageListView

    seen = []

    class Spy:
        image_processor = tiny_processor.image_processor

        def __call__(self, images=None, **kwargs):
            seen.extend(image.size for image in images)
            return tiny_processor(images=images, **kwargs)

    size = tiny_processor.image_processor.image_size
    Image.new("RGB", (size * 8, size * 8)).save(tmp_path / "large.jpg")
    MSADataCollator(Spy(), text_column=None, id_column="row")([ImageListView(["large.jpg"], tmp_path)[0]])
    assert seen == [(size * 2, size * 2)]  # decoded at 1/4 scale, not at full size


def test_eval_view_head_keeps_captions_of_the_first_images(corpus) -> None:
    view = evaluation_view(corpus["test"]).head(2)
    assert view.num_images == 2 and view.num_captions == 10
    assert view.caption_image_ids.tolist() == [0] * 5 + [1] * 5
