"""The losses against direct loops over the formulas of docs/method.md, section 5, and MSALoss's registry."""

import math

import pytest
import torch
import torch.nn.functional as F

from msa_hf.losses import LOSS_TERMS, LossBlocks, LossTerm, csmmc_loss, mscma_loss, register_loss, triplet_loss


def loop_triplet(v, t, margin, image_ids=None):
    batch = v.shape[0]
    cos = v @ t.t()
    total = 0.0
    for i in range(batch):
        negatives = [j for j in range(batch) if j != i and (image_ids is None or image_ids[j] != image_ids[i])]
        if not negatives:
            continue
        hardest_t = max(negatives, key=lambda j: cos[i, j].item())
        hardest_v = max(negatives, key=lambda j: cos[j, i].item())
        total += max(0.0, margin - cos[i, i].item() + cos[i, hardest_t].item())
        total += max(0.0, margin - cos[i, i].item() + cos[hardest_v, i].item())
    return total


def loop_mscma(scores):
    total = 0.0
    for scale in scores:
        batch = scale.shape[0]
        row_losses = []
        for i in range(batch):
            log_norm = math.log(sum(math.exp(scale[i, j].item()) for j in range(batch)))
            row_losses.append(log_norm - scale[i, i].item())
        total += sum(row_losses) / batch
    return total


def loop_csmmc(scores, tau):
    batch = scores.shape[-1]
    teacher = scores[-1]
    total = 0.0
    for scale in scores[:-1]:
        kl = 0.0
        for j in range(batch):  # each text: a distribution over images
            p_norm = sum(math.exp(scale[i, j].item() / tau) for i in range(batch))
            q_norm = sum(math.exp(teacher[i, j].item() / tau) for i in range(batch))
            for i in range(batch):
                p = math.exp(scale[i, j].item() / tau) / p_norm
                q = math.exp(teacher[i, j].item() / tau) / q_norm
                kl += p * (math.log(p) - math.log(q))
        total += kl / batch**2
    return total


@pytest.fixture
def embeddings():
    torch.manual_seed(3)
    v = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    t = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    return v, t


def test_triplet_matches_loop(embeddings):
    v, t = embeddings
    for margin in (0.5, 0.1, 2.0):
        assert triplet_loss(v, t, margin).item() == pytest.approx(loop_triplet(v, t, margin), abs=1e-10)


def test_triplet_excludes_same_image_captions(embeddings):
    v, t = embeddings
    ids = torch.tensor([0, 0, 1, 2, 2, 2])
    got = triplet_loss(v, t, 0.5, image_ids=ids).item()
    assert got == pytest.approx(loop_triplet(v, t, 0.5, ids.tolist()), abs=1e-10)
    assert got != pytest.approx(triplet_loss(v, t, 0.5).item())


def test_triplet_is_summed_not_averaged(embeddings):
    v, t = embeddings
    # Duplicating the batch with a huge margin doubles a summed loss (every term positive).
    loss = triplet_loss(v, t, 10.0).item()
    assert loss == pytest.approx(loop_triplet(v, t, 10.0))
    assert loss > 6 * 2 * (10.0 - 2.0)


def test_triplet_gradient_reaches_only_chosen_negatives():
    v = F.normalize(torch.randn(4, 5), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(4, 5), dim=-1).requires_grad_()
    triplet_loss(v, t, 5.0).backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_triplet_single_pair_has_no_negative_and_zero_loss():
    v = F.normalize(torch.randn(1, 4), dim=-1).requires_grad_()
    loss = triplet_loss(v, v.detach().clone(), 0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(v.grad).all()


def test_mscma_matches_loop():
    torch.manual_seed(1)
    scores = torch.sigmoid(torch.randn(4, 5, 5, dtype=torch.float64))
    assert mscma_loss(scores).item() == pytest.approx(loop_mscma(scores), abs=1e-10)


def test_mscma_same_image_captions_leave_the_softmax():
    torch.manual_seed(2)
    scores = torch.sigmoid(torch.randn(2, 4, 4, dtype=torch.float64))
    ids = torch.tensor([0, 0, 1, 2])
    expected = 0.0
    for scale in scores:
        rows = []
        for i in range(4):
            allowed = [j for j in range(4) if j == i or ids[j] != ids[i]]
            log_norm = math.log(sum(math.exp(scale[i, j].item()) for j in allowed))
            rows.append(log_norm - scale[i, i].item())
        expected += sum(rows) / 4
    assert mscma_loss(scores, ids).item() == pytest.approx(expected, abs=1e-10)


def test_csmmc_matches_loop_and_pytorch_kl_div():
    torch.manual_seed(4)
    scores = torch.sigmoid(torch.randn(4, 5, 5, dtype=torch.float64))
    got = csmmc_loss(scores, 2.0).item()
    assert got == pytest.approx(loop_csmmc(scores, 2.0), abs=1e-12)
    # The original's own expression: kl_div(Q.log(), P_k, reduction="mean") per smaller scale.
    q = F.softmax(scores[-1] / 2.0, dim=0)
    original = sum(F.kl_div(q.log(), F.softmax(s / 2.0, dim=0), reduction="mean") for s in scores[:-1])
    assert got == pytest.approx(original.item(), abs=1e-12)


def test_csmmc_teacher_gets_no_gradient():
    scores = torch.sigmoid(torch.randn(3, 4, 4)).requires_grad_()
    csmmc_loss(scores, 2.0).backward()
    assert scores.grad[-1].abs().sum() == 0
    assert scores.grad[:-1].abs().sum() > 0


def test_losses_reject_non_square_scores():
    with pytest.raises(ValueError, match="as many images as texts"):
        mscma_loss(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="as many images as texts"):
        csmmc_loss(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="must match"):
        triplet_loss(torch.rand(3, 4), torch.rand(2, 4))
    with pytest.raises(ValueError, match="image_ids"):
        triplet_loss(torch.rand(3, 4), torch.rand(3, 4), image_ids=torch.tensor([0, 1]))


def test_triplet_loss_spares_captions_that_repeat_an_own_caption(embeddings):
    """same_text_positives: a caption whose text is one of image i's own is never i's negative."""
    v, t = embeddings
    text_ids = torch.tensor([0, 1, 0, 2, 3, 4])  # captions 0 and 2 are the same sentence
    image_text_ids = text_ids[:, None]
    got = triplet_loss(v, t, 0.5, text_ids=text_ids, image_text_ids=image_text_ids).item()
    assert got == pytest.approx(loop_triplet(v, t, 0.5, image_ids=torch.tensor([0, 1, 0, 2, 3, 4])), abs=1e-10)
    assert got != pytest.approx(triplet_loss(v, t, 0.5).item())


def test_public_losses_are_the_model_loss_terms_with_same_text_positives():
    from msa_hf import MSAConfig, MSAModel, MSATrainingInputs

    torch.manual_seed(0)
    config = MSAConfig.from_preset("msa-tiny", same_text_positives=True, same_image_positives=True)
    model = MSAModel(config).eval()
    batch = {"pixel_values": torch.randn(4, 3, 64, 64), "input_ids": torch.randint(5, 100, (4, 10))}
    ids = {"text_ids": torch.tensor([7, 8, 7, 9]), "image_text_ids": torch.tensor([[7, -1], [8, -1], [7, -1], [9, 8]])}
    image_ids = torch.tensor([0, 1, 2, 2])
    with torch.no_grad():
        out = model(**batch, return_loss=True, image_ids=image_ids, training_inputs=MSATrainingInputs(**ids))
    expected = triplet_loss(out.image_embeds, out.text_embeds, config.triplet_margin, image_ids, **ids)
    torch.testing.assert_close(out.loss_triplet, expected)
    torch.testing.assert_close(out.loss_csmmc, csmmc_loss(out.scale_logits, config.csmmc_temperature))
    assert list(out.loss_terms) == ["triplet", "mscma", "csmmc"]


@pytest.fixture
def toy_loss():
    """A toy loss: one function, one weight (the config's ``toy_weight``) and one registration."""

    def mean_cosine(blocks: LossBlocks) -> torch.Tensor:
        return 1 - (blocks.image_embeds * blocks.text_embeds).sum(dim=-1).mean()

    register_loss("toy", LossTerm(mean_cosine, weight="toy_weight"))
    yield mean_cosine
    del LOSS_TERMS["toy"]


def test_a_toy_loss_takes_one_function_one_weight_and_one_registration(toy_loss):
    from msa_hf import MSAConfig, MSAModel
    from msa_hf_train.reporting import loss_record

    torch.manual_seed(0)
    config = MSAConfig.from_preset("msa-tiny")
    config.toy_weight = 3.0
    model = MSAModel(config).eval()
    batch = {"pixel_values": torch.randn(4, 3, 64, 64), "input_ids": torch.randint(5, 100, (4, 10))}
    with torch.no_grad():
        out = model(**batch, return_loss=True)
    toy = 1 - (out.image_embeds * out.text_embeds).sum(dim=-1).mean()
    torch.testing.assert_close(out.loss_terms["toy"], toy)
    weighted = config.triplet_weight * out.loss_triplet + config.mscma_weight * out.loss_mscma
    torch.testing.assert_close(out.loss, weighted + config.csmmc_weight * out.loss_csmmc + 3.0 * toy)
    assert list(loss_record(out)) == ["loss", "loss_triplet", "loss_mscma", "loss_csmmc", "loss_toy"]


def test_register_loss_refuses_a_taken_name():
    with pytest.raises(ValueError, match="'triplet' is registered already"):
        register_loss("triplet", LOSS_TERMS["triplet"])


def test_mscmat_runs_only_when_a_term_reading_it_weighs_anything():
    from msa_hf import MSAConfig, MSAModel

    assert MSAModel(MSAConfig.from_preset("msa-tiny")).uses_mscmat
    off = MSAModel(MSAConfig.from_preset("msa-tiny", mscma_weight=0.0, csmmc_weight=0.0))
    assert not off.uses_mscmat
    batch = {"pixel_values": torch.randn(2, 3, 64, 64), "input_ids": torch.randint(5, 100, (2, 8))}
    out = off(**batch, return_loss=True)
    assert out.scale_logits is None and out.loss_mscma == 0 and out.loss_csmmc == 0
