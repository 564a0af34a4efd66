"""Options that depart from the paper: mean text pooling, the contrastive term, same-text positives, view averaging."""

import torch
import torch.nn.functional as F

from msa_hf import IMAGE_VIEW_GROUPS, MSAConfig, MSAModel, MSATrainingInputs, image_view


def model_with(**options) -> MSAModel:
    torch.manual_seed(0)
    return MSAModel(MSAConfig.from_preset("msa-tiny", **options)).eval()


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[1, 6:] = 0
    return {
        "pixel_values": torch.randn(4, 3, 64, 64, generator=generator),
        "input_ids": torch.randint(5, 120, (4, 16), generator=generator) * mask,
        "attention_mask": mask,
    }


def test_mean_pooling_averages_the_real_tokens_only():
    model = model_with(text_pooling="mean")
    batch = inputs()
    hidden = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    expected = torch.stack([hidden[i, : int(batch["attention_mask"][i].sum())].mean(0) for i in range(4)])
    torch.testing.assert_close(model.embed_texts(batch["input_ids"], batch["attention_mask"]), expected)
    assert model.text_model.pooler is None  # unused, so dropped like for [CLS] pooling


def test_the_contrastive_term_is_symmetric_infonce_and_off_by_default():
    batch = inputs()
    assert model_with()(**batch, return_loss=True).loss_contrastive is None
    out = model_with(contrastive_weight=2.0, contrastive_temperature=0.1)(**batch, return_loss=True)
    scores = out.image_embeds @ out.text_embeds.t() / 0.1
    target = torch.arange(4)
    expected = 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target))
    torch.testing.assert_close(out.loss_contrastive, expected)
    total = out.loss_triplet + 15 * out.loss_mscma + 10 * out.loss_csmmc + 2.0 * out.loss_contrastive
    torch.testing.assert_close(out.loss, total)


def test_same_text_positives_spare_captions_with_an_image_s_own_text():
    batch = {**inputs(), "return_loss": True}
    text_ids = torch.tensor([0, 1, 0, 2])  # captions 0 and 2 have the same text
    image_text_ids = torch.tensor([[0, 3], [1, -1], [0, -1], [2, 1]])  # image 3 also has text 1 among its captions
    ids = MSATrainingInputs(text_ids=text_ids, image_text_ids=image_text_ids)
    plain = model_with(contrastive_weight=1.0)(**batch, training_inputs=ids)
    spared = model_with(same_text_positives=True, contrastive_weight=1.0)(**batch, training_inputs=ids)
    scores = spared.image_embeds @ spared.text_embeds.t() / 0.05
    positives = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    others = positives & ~torch.eye(4, dtype=torch.bool)
    target = torch.arange(4)
    expected = 0.5 * (
        F.cross_entropy(scores.masked_fill(others, float("-inf")), target)
        + F.cross_entropy(scores.t().masked_fill(others.t(), float("-inf")), target)
    )
    torch.testing.assert_close(spared.loss_contrastive, expected)
    assert not torch.allclose(plain.loss_triplet, spared.loss_triplet)


def test_flip_averaging_is_the_mean_over_the_four_flips_at_inference_only():
    pixel_values = inputs()["pixel_values"]
    plain = model_with()
    averaged = model_with(image_flip_averaging=True)
    flips = [pixel_values, pixel_values.flip(-1), pixel_values.flip(-2), pixel_values.flip((-2, -1))]
    expected = torch.stack([plain.embed_images(view) for view in flips]).mean(0)
    torch.testing.assert_close(averaged.embed_images(pixel_values), expected)
    torch.testing.assert_close(averaged.embed_images(pixel_values.flip(-1)), expected)  # flip-invariant
    assert not torch.allclose(plain.embed_images(pixel_values), expected)
    if hasattr(averaged.get_image_features(pixel_values), "pooler_output"):
        torch.testing.assert_close(averaged.get_image_features(pixel_values).pooler_output, expected)
    batch = inputs()
    torch.testing.assert_close(averaged(**batch).image_embeds, F.normalize(expected, dim=-1))
    averaged.train()
    torch.testing.assert_close(averaged.embed_images(pixel_values), plain.train().embed_images(pixel_values))


def test_image_views_are_the_eight_symmetries_of_the_square_numbered_turn_then_mirror():
    image = torch.arange(2 * 3 * 3, dtype=torch.float32).view(2, 3, 3)
    views = [image_view(image, v) for v in range(8)]
    assert len({tuple(view.flatten().tolist()) for view in views}) == 8
    assert torch.equal(views[0], image) and torch.equal(views[1], torch.rot90(image, 1, dims=(-2, -1)))
    assert torch.equal(views[4], image.flip(-1)) and torch.equal(views[5], views[1].flip(-1))
    flips = {tuple(view.flatten().tolist()) for view in (image, image.flip(-1), image.flip(-2), image.flip((-2, -1)))}
    assert {tuple(views[v].flatten().tolist()) for v in IMAGE_VIEW_GROUPS["flips"]} == flips


def test_dihedral_averaging_is_the_mean_over_all_eight_views_at_inference_only():
    pixel_values = inputs()["pixel_values"]
    plain = model_with()
    averaged = model_with(image_flip_averaging=True, image_averaging_views="dihedral")
    expected = torch.stack([plain.embed_images(image_view(pixel_values, v)) for v in range(8)]).mean(0)
    torch.testing.assert_close(averaged.embed_images(pixel_values), expected)
    turned = torch.rot90(pixel_values, 1, dims=(-2, -1))
    torch.testing.assert_close(averaged.embed_images(turned), expected)  # invariant to a quarter turn
    flips_only = model_with(image_flip_averaging=True)
    assert not torch.allclose(flips_only.embed_images(turned), flips_only.embed_images(pixel_values))
    averaged.train()
    torch.testing.assert_close(averaged.embed_images(pixel_values), plain.train().embed_images(pixel_values))
