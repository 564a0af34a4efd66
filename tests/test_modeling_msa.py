"""MSAModel: outputs, MSCMAT against the per-pair definition, save/load, gradients, errors."""

import dataclasses
import inspect
import math
import os

import pytest
import timm
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoConfig, AutoModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from msa_hf import MSCMAT, MSAConfig, MSAModel, MSAOutput, MSATrainingInputs
from msa_hf.losses import csmmc_loss, mscma_loss, triplet_loss
from msa_hf.modeling_msa import backbone_steps, scale_step_indices


def make_inputs(config, images=3, texts=3, seed=0, pad_from=9):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(images, 3, config.image_size, config.image_size, generator=generator)
    input_ids = torch.randint(5, config.text_config.vocab_size, (texts, config.text_max_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:, pad_from:] = 0
    input_ids[:, 0] = 2
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


def mscmat_per_pair(mscmat, scale_features, tokens, text_global, text_mask=None):
    """Spec section 4 verbatim: one nn.MultiheadAttention call per (scale, image, text)."""
    num_scales = len(scale_features)
    num_images, num_texts = scale_features[0].shape[0], tokens.shape[0]
    out = torch.zeros(num_scales, num_images, num_texts, dtype=tokens.dtype)
    for k in range(num_scales):
        for i in range(num_images):
            q = mscmat.query_projections[k](scale_features[k][i])
            for j in range(num_texts):
                kv = mscmat.text_norm(tokens[j])[None]
                padding = None if text_mask is None else (text_mask[j] == 0)[None]
                c, _ = mscmat.attentions[k](mscmat.query_norm(q)[None, None], kv, kv, key_padding_mask=padding)
                out[k, i, j] = torch.sigmoid(mscmat.match_heads[k]((c[0, 0] + text_global[j]) * q))[0]
    return out


def test_forward_outputs(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, images=2, texts=5)
    with torch.no_grad():
        out = tiny_model(**inputs)
    assert isinstance(out, MSAOutput)
    assert out.logits_per_image.shape == (2, 5) and out.logits_per_text.shape == (5, 2)
    assert out.image_embeds.shape == (2, tiny_config.projection_dim)
    assert out.text_embeds.shape == (5, tiny_config.projection_dim)
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert out.loss is None and out.scale_logits is None  # MSCMAT only runs when asked
    assert torch.allclose(out.logits_per_image, out.image_embeds @ out.text_embeds.t())
    with torch.no_grad():
        scores = tiny_model(**inputs, output_scale_logits=True).scale_logits
    assert scores.shape == (tiny_config.num_scales, 2, 5)
    assert ((scores > 0) & (scores < 1)).all()


def test_feature_getters_agree_with_forward(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        out = tiny_model(**inputs)
        v = tiny_model.embed_images(inputs["pixel_values"])
        t = tiny_model.embed_texts(inputs["input_ids"], inputs["attention_mask"])
        scales = tiny_model.get_scale_features(inputs["pixel_values"])
        stages = tiny_model.vision_model.backbone(inputs["pixel_values"])
    torch.testing.assert_close(F.normalize(v, dim=-1), out.image_embeds)
    torch.testing.assert_close(F.normalize(t, dim=-1), out.text_embeds)
    assert [s.shape[1] for s in scales] == tiny_model.vision_model.scale_channels
    # Spec section 1: max pooling for the first three stages, average for the last.
    for scale, stage, mode in zip(scales, stages, tiny_config.vision_pooling):
        expected = stage.amax(dim=(-2, -1)) if mode == "max" else stage.mean(dim=(-2, -1))
        torch.testing.assert_close(scale, expected)


def test_loss_is_the_weighted_sum_of_the_three_losses(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config, images=4, texts=4)
    with torch.no_grad():
        out = tiny_model(**inputs, return_loss=True)
    torch.testing.assert_close(out.loss_triplet, triplet_loss(out.image_embeds, out.text_embeds, 0.5))
    torch.testing.assert_close(out.loss_mscma, mscma_loss(out.scale_logits))
    torch.testing.assert_close(out.loss_csmmc, csmmc_loss(out.scale_logits, 2.0))
    torch.testing.assert_close(out.loss, out.loss_triplet + 15.0 * out.loss_mscma + 10.0 * out.loss_csmmc)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_mscmat_batch_equals_per_pair_definition(tiny_config, mask_padding):
    torch.manual_seed(0)
    config = MSAConfig.from_preset("msa-tiny", mscmat_mask_padding=mask_padding)
    model = MSAModel(config).eval()
    inputs = make_inputs(config, images=3, texts=4)
    with torch.no_grad():
        scales = model.get_scale_features(inputs["pixel_values"])
        hidden = model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        text_global = F.normalize(hidden[:, 0], dim=-1)
        mask = inputs["attention_mask"][:, 1:]
        batched = model.mscmat(scales, hidden[:, 1:], text_global, mask)
        looped = mscmat_per_pair(model.mscmat, scales, hidden[:, 1:], text_global, mask if mask_padding else None)
        full = model(**inputs, output_scale_logits=True).scale_logits
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)
    torch.testing.assert_close(full, batched)


def test_mscmat_masking_changes_scores_only_when_enabled():
    torch.manual_seed(0)
    mscmat = MSCMAT([8, 16], 24, 4).eval()
    scales = [torch.randn(2, 8), torch.randn(2, 16)]
    tokens, text_global = torch.randn(3, 6, 24), F.normalize(torch.randn(3, 24), dim=-1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 3)
    with torch.no_grad():
        faithful = mscmat(scales, tokens, text_global, mask)
        mscmat.mask_padding = True
        masked = mscmat(scales, tokens, text_global, mask)
        short = mscmat(scales, tokens[:, :3], text_global)
    assert not torch.allclose(faithful, masked)
    torch.testing.assert_close(masked, short)  # masked padding == padding absent


def test_mscmat_at_paper_width_matches_per_pair():
    torch.manual_seed(1)
    mscmat = MSCMAT([256, 512, 1024, 2048], 768, 12).eval()
    scales = [torch.randn(2, c) for c in (256, 512, 1024, 2048)]
    tokens, text_global = torch.randn(3, 30, 768), F.normalize(torch.randn(3, 768), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(
            mscmat(scales, tokens, text_global), mscmat_per_pair(mscmat, scales, tokens, text_global), atol=1e-5, rtol=0
        )


def test_forward_takes_clip_s_arguments_and_groups_what_only_a_trainer_passes():
    """The public signature is CLIP's plus MSA's own (outputs, the collator's image ids); trainer plumbing is grouped."""
    parameters = list(inspect.signature(MSAModel.forward).parameters)
    assert parameters == [
        "self",
        "input_ids",
        "attention_mask",
        "pixel_values",
        "return_loss",
        "image_ids",
        "output_scale_logits",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "token_type_ids",
        "training_inputs",
    ]
    trainer_only = {field.name for field in dataclasses.fields(MSATrainingInputs)}
    assert trainer_only == {
        "scale_features",
        "stage_hidden_state",
        "text_ids",
        "image_text_ids",
        "global_negatives",
    }
    assert not trainer_only & set(parameters)


def test_same_image_positives_uses_image_ids(tiny_config):
    torch.manual_seed(0)
    config = MSAConfig.from_preset("msa-tiny", same_image_positives=True)
    model = MSAModel(config).eval()
    inputs = make_inputs(config, images=4, texts=4)
    ids = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        out = model(**inputs, return_loss=True, image_ids=ids)
        plain = model(**inputs, return_loss=True)
    torch.testing.assert_close(out.loss_triplet, triplet_loss(out.image_embeds, out.text_embeds, 0.5, ids))
    torch.testing.assert_close(out.loss_mscma, mscma_loss(out.scale_logits, ids))
    assert not torch.allclose(out.loss_mscma, plain.loss_mscma)


def test_save_load_is_bit_identical(tiny_model, tiny_config, tmp_path):
    inputs = make_inputs(tiny_config)
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded, info = MSAModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        a = tiny_model(**inputs, output_scale_logits=True)
        b = loaded.eval()(**inputs, output_scale_logits=True)
    for name in ("image_embeds", "text_embeds", "scale_logits"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_saved_weights_get_the_umask_mode_not_safetensors_private_one(tiny_model, tmp_path):
    """safetensors 0.8 creates its files 0600; a saved model is as readable as the rest of its folder."""
    old = os.umask(0o022)
    try:
        tiny_model.save_pretrained(tmp_path)
    finally:
        os.umask(old)
    assert oct((tmp_path / "model.safetensors").stat().st_mode & 0o777) == "0o644"
    assert oct((tmp_path / "config.json").stat().st_mode & 0o777) == "0o644"


def test_save_load_keeps_layerscale_gamma(tmp_path):
    """timm ConvNeXt's LayerScale is named gamma, which old transformers renamed on load."""
    config = MSAConfig.from_preset("msa-tiny", vision_backbone="test_convnext", vision_out_indices=(0, 1, 2, 3))
    torch.manual_seed(0)
    model = MSAModel(config).eval()
    gammas = [k for k in model.state_dict() if "gamma" in k]
    assert gammas
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gamma" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path)
    loaded = MSAModel.from_pretrained(tmp_path).eval()
    for key in gammas:
        assert torch.equal(model.state_dict()[key], loaded.state_dict()[key]), key
    inputs = make_inputs(config)
    with torch.no_grad():
        assert torch.equal(model.embed_images(inputs["pixel_values"]), loaded.embed_images(inputs["pixel_values"]))


def test_auto_classes_resolve(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is MSAConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is MSAModel
    assert type(AutoModel.from_config(tiny_model.config)) is MSAModel


def test_saved_folder_carries_remote_code(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    assert '"AutoModel": "modeling_msa.MSAModel"' in config
    for name in ("modeling_msa.py", "configuration_msa.py", "losses.py"):
        assert (tmp_path / name).is_file(), name


def perturbed_model(config):
    torch.manual_seed(0)
    model = MSAModel(config)
    with torch.no_grad():  # timm zero-initialises the last norm of each block: move off zero first
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def test_gradient_reaches_every_trainable_parameter(tiny_config):
    model = perturbed_model(tiny_config).train()
    model(**make_inputs(tiny_config, images=4, texts=4), return_loss=True).loss.backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert no_grad == []


def test_gradient_checkpointing_reaches_both_towers_and_keeps_gradients(tiny_config):
    config = MSAConfig.from_preset(
        "msa-tiny",
        text_config={
            **tiny_config.text_config.to_dict(),
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
    )
    inputs = make_inputs(config, images=4, texts=4)
    reference = perturbed_model(config).train()
    reference(**inputs, return_loss=True).loss.backward()
    model = perturbed_model(config).train()
    # transformers 5 renamed the switch; 4.57 only has the old name.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.vision_model.backbone.grad_checkpointing
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.text_model.modules())
    model(**inputs, return_loss=True).loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), model.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_same_seed_same_model():
    config = MSAConfig.from_preset("msa-tiny")
    torch.manual_seed(7)
    a = MSAModel(config)
    torch.manual_seed(7)
    b = MSAModel(config)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_projection_dim_other_than_text_width(tiny_config):
    config = MSAConfig.from_preset("msa-tiny", projection_dim=24)
    model = MSAModel(config).eval()
    inputs = make_inputs(config, images=2, texts=2)
    with torch.no_grad():
        out = model(**inputs, return_loss=True)
    assert out.image_embeds.shape == (2, 24) and out.text_embeds.shape == (2, 24)
    assert math.isfinite(out.loss.item())


# --- bad input ------------------------------------------------------------------------------


def test_batch_size_mismatch_with_loss(tiny_model, tiny_config):
    with pytest.raises(ValueError, match="2 images and\\s+3 captions"):
        tiny_model(**make_inputs(tiny_config, images=2, texts=3), return_loss=True)


def test_wrong_channel_count(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config)
    inputs["pixel_values"] = inputs["pixel_values"][:, :1]
    with pytest.raises(ValueError, match="1 channels.*expects 3"):
        tiny_model(**inputs)


def test_image_smaller_than_total_stride(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config)
    inputs["pixel_values"] = torch.randn(3, 3, 16, 16)
    with pytest.raises(ValueError, match="smaller than the backbone's total stride 32"):
        tiny_model(**inputs)


def test_attention_mask_shape_mismatch(tiny_model, tiny_config):
    inputs = make_inputs(tiny_config)
    inputs["attention_mask"] = inputs["attention_mask"][:, :5]
    with pytest.raises(ValueError, match="attention_mask"):
        tiny_model(**inputs)


# --- transformers' conventions ---------------------------------------------------------------


def test_feature_methods_follow_clip_on_each_transformers_major(tiny_model, tiny_config):
    """transformers 5: BaseModelOutputWithPooling (pooler_output = the embedding); 4.x: the tensor."""
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        v = tiny_model.embed_images(inputs["pixel_values"])
        t = tiny_model.embed_texts(inputs["input_ids"], inputs["attention_mask"])
        image_features = tiny_model.get_image_features(inputs["pixel_values"])
        text_features = tiny_model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    if transformers.__version__.startswith("4."):
        assert torch.equal(image_features, v) and torch.equal(text_features, t)
        return
    assert isinstance(image_features, BaseModelOutputWithPooling)
    assert torch.equal(image_features.pooler_output, v) and torch.equal(text_features.pooler_output, t)
    assert text_features.last_hidden_state.shape == (3, tiny_config.text_max_length, 32)
    assert image_features.last_hidden_state.ndim == 4  # the deepest timm stage map
    with torch.no_grad():
        as_tuple = tiny_model.get_image_features(inputs["pixel_values"], return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], v)


def test_forward_takes_return_dict_and_output_flags(tiny_config):
    model = MSAModel(MSAConfig.from_preset("msa-tiny", attn_implementation="eager")).eval()  # eager: attention maps
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
        as_tuple = model(**inputs, return_dict=False)
    assert len(out.text_model_output.hidden_states) == tiny_config.text_config.num_hidden_layers + 1
    assert len(out.text_model_output.attentions) == tiny_config.text_config.num_hidden_layers
    stages = out.vision_model_output.hidden_states  # a timm tower's hidden states: its scale maps
    assert [s.shape[1] for s in stages] == model.vision_model.scale_channels
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.logits_per_image)
    assert MSAModel.main_input_name == list(inspect.signature(MSAModel.forward).parameters)[1]  # after self


def test_attn_implementation_reaches_the_text_tower(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    for implementation in ("sdpa", "eager"):
        model = MSAModel.from_pretrained(tmp_path, attn_implementation=implementation)
        assert model.text_model.config._attn_implementation == implementation


# --- frozen parts, gradients -----------------------------------------------------------------


def test_frozen_parts_stay_in_eval_mode_so_batchnorm_statistics_stay_fixed(tiny_config):
    model = MSAModel(tiny_config)
    model.freeze_vision_tower()
    model.train()
    backbone = model.vision_model.backbone
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model(**make_inputs(tiny_config, images=4, texts=4), return_loss=True).loss.backward()
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert model.image_projection.training and model.text_model.training  # the rest trains


def test_freeze_sentinels_mean_what_the_recipe_means(tiny_config):
    """``"all"`` is the whole tower, ``None`` and ``0`` nothing: in the model as in the recipe and the cache."""
    model = MSAModel(tiny_config)
    assert model.freeze_vision_tower(None) == [] and model.freeze_text_tower(0) == []
    assert all(param.requires_grad for param in model.parameters())
    assert len(model.freeze_vision_tower("all")) == len(list(model.vision_model.backbone.parameters()))
    assert len(model.freeze_text_tower()) == len(list(model.text_model.parameters()))
    with pytest.raises(ValueError, match="cannot freeze 'some'.*'all' for the whole tower"):
        model.freeze_vision_tower("some")


def test_partly_frozen_towers_keep_only_their_frozen_part_in_eval(tiny_config):
    model = MSAModel(tiny_config)
    model.freeze_vision_tower(2)
    model.freeze_text_tower(1)
    model.train()
    backbone = model.vision_model.backbone
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.training == name.startswith(("layer3.", "layer4.")), name
    assert not model.text_model.embeddings.training and not model.text_model.encoder.layer[0].training
    assert model.text_model.encoder.layer[1].training
    model.eval()
    assert not any(m.training for m in model.modules())


# One timm family per class MSATimmVisionTower can split (docs/training.md), stem scale (out index 0) included.
SPLITTABLE_TOWERS = {
    "resnet": ("test_resnet", (0, 1, 2, 3, 4)),
    "convnext": ("test_convnext", (0, 1, 2, 3)),
    "efficientnet": ("test_efficientnet", (0, 1, 2, 3, 4)),
    "tf_efficientnet_lite": ("tf_efficientnet_lite0", (1, 2, 3, 4)),
    "mobilenetv3": ("mobilenetv3_small_050", (0, 1, 2, 3, 4)),
}


@pytest.mark.parametrize("family", sorted(SPLITTABLE_TOWERS))
def test_the_tower_resumed_from_any_stage_gives_its_own_upper_scales(family):
    backbone, out_indices = SPLITTABLE_TOWERS[family]
    pooling = ("max", "avg") * 3
    config = MSAConfig.from_preset(
        "msa-tiny", vision_backbone=backbone, vision_out_indices=out_indices, vision_pooling=pooling[: len(out_indices)]
    )
    torch.manual_seed(0)
    model = MSAModel(config).eval()
    outputs = model.vision_model(torch.randn(2, 3, 64, 64), output_hidden_states=True)
    num_scales = len(out_indices)
    for stage in range(1, num_scales):
        resumed = model.vision_model.forward_from_stage(outputs.hidden_states[stage - 1], stage)
        assert len(resumed) == num_scales - stage
        for got, expected in zip(resumed, outputs.scale_features[stage:]):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"`stage` must be in 1..{num_scales - 1}"):
        model.vision_model.forward_from_stage(outputs.hidden_states[-1], num_scales)


def test_a_tower_that_is_not_a_sequence_of_modules_refuses_to_resume_and_says_the_fix():
    config = MSAConfig.from_preset("msa-tiny", vision_backbone="test_vit", vision_out_indices=(1, 2, 3, 4))
    model = MSAModel(config).eval()
    outputs = model.vision_model(torch.randn(1, 3, 64, 64), output_hidden_states=True)
    with pytest.raises(ValueError, match=r"'test_vit' .* FeatureGetterNet\..*cache_frozen_vision=false"):
        model.vision_model.forward_from_stage(outputs.hidden_states[1], 2)


def test_a_scale_taken_inside_a_block_is_not_a_split_point():
    """timm's feature hooks (``feature_location="expansion"``) take maps inside blocks: no step ends there."""
    backbone = timm.create_model("test_efficientnet", features_only=True, feature_location="expansion")
    steps = backbone_steps(backbone, "test_efficientnet")
    with pytest.raises(ValueError, match=r"'test_efficientnet' .* at 'blocks\.0\.0\.bn1' is taken inside a module"):
        scale_step_indices(steps, backbone.feature_info.module_name(), "test_efficientnet")


def test_forward_from_lower_scales_and_a_stage_map_trains_the_upper_stages(tiny_config):
    """A cached frozen lower tower plus trained upper stages gives the loss and the gradients of pixels."""
    torch.manual_seed(0)
    model = MSAModel(tiny_config)
    model.freeze_vision_tower(2)
    model.eval()  # fixed BatchNorm statistics, so the two paths see the same normalisation
    inputs = make_inputs(tiny_config, images=4, texts=4)
    pixel_values = inputs.pop("pixel_values")
    direct = model(pixel_values=pixel_values, **inputs, return_loss=True)
    direct.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    tower = model.vision_model(pixel_values, output_hidden_states=True)
    resumed = model(
        training_inputs=MSATrainingInputs(
            scale_features=[s.detach() for s in tower.scale_features[:2]],
            stage_hidden_state=tower.hidden_states[1].detach(),
        ),
        **inputs,
        return_loss=True,
    )
    resumed.loss.backward()
    torch.testing.assert_close(resumed.loss, direct.loss)
    assert any(n.startswith("vision_model.backbone.layer4.") for n in expected)
    for name, grad in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, msg=name)


VIT = {
    "model_type": "vit",
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "image_size": 32,
    "patch_size": 8,
}
CLIP_VISION = {**VIT, "model_type": "clip_vision_model"}


@pytest.mark.parametrize("vision_config", [VIT, CLIP_VISION], ids=["vit", "clip"])
def test_every_trainable_parameter_of_a_transformers_tower_gets_gradient(vision_config):
    """DDP refuses parameters without gradient: the towers' final norms are unused by the scales."""
    config = MSAConfig.from_preset(
        "msa-tiny",
        vision_config=vision_config,
        vision_out_indices=(1, 2, 3),
        vision_pooling=("cls",) * 3,
        image_size=32,
    )
    model = perturbed_model(config).train()
    inputs = make_inputs(config, images=4, texts=4)
    model(**inputs, return_loss=True).loss.backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert no_grad == []
