"""Converter: a random state dict in the original layout gives a model computing docs/method.md, sections 2-4."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from transformers import BertConfig, BertModel

from msa_hf import MSAModel, MSAProcessor
from msa_hf.convert_original import main

D = 768
CHANNELS = (256, 512, 1024, 2048)
TEXT = {"vocab_size": 99, "hidden_size": D, "num_hidden_layers": 1, "num_attention_heads": 12, "intermediate_size": 64}


def linear(out_features, in_features):
    return {
        "weight": torch.randn(out_features, in_features) * in_features**-0.5,
        "bias": torch.randn(out_features) * 0.1,
    }


def add(state, prefix, tensors):
    state.update({f"{prefix}.{k}": v for k, v in tensors.items()})


@pytest.fixture(scope="module")
def original(tmp_path_factory, tiny_vocab_dir):
    """The four original files, random, with every key of reference-state-dict.tsv's layout."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("original")
    resnet = torchvision.models.resnet50(num_classes=7)
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    img_model = {f"feature_extractor.{k}": v for k, v in resnet.state_dict().items()}
    for k, c in enumerate(CHANNELS, 1):
        add(img_model, f"fc{k}", linear(D, c))
    img_model.update(
        {
            "norm_layer.weight": torch.ones(1),
            "norm_layer.bias": torch.zeros(1),
            "norm_layer.running_mean": torch.zeros(1),
            "norm_layer.running_var": torch.ones(1),
            "norm_layer.num_batches_tracked": torch.tensor(0),
            "image_channel_reduce.weight": torch.randn(1, 960, 1, 1),
            "image_patch_proj.weight": torch.randn(768, 1, 7, 7),
        }
    )
    img_map = {}
    for name in ("fc", "att", "fc2"):
        add(img_map, name, linear(D, D))
    bert = BertModel(BertConfig(**TEXT))
    text_model = {f"bert_model.{k}": v for k, v in bert.state_dict().items()}
    text_model["bert_model.pooler.dense.weight"] = torch.randn(D, D)
    text_model["bert_model.pooler.dense.bias"] = torch.randn(D)
    crossatt = {}
    for k, c in enumerate(CHANNELS, 1):
        add(crossatt, f"fc{k}", linear(D, c))
        attention = nn.MultiheadAttention(D, 12)
        with torch.no_grad():
            attention.in_proj_bias.normal_(0, 0.1)
            attention.out_proj.bias.normal_(0, 0.1)
        add(crossatt, f"cross_attn{k}", attention.state_dict())
        add(crossatt, f"match_fc{k}", linear(1, D))
    for name in ("ln_pre_t", "ln_pre_i", "ln_post"):
        add(crossatt, name, {"weight": 1 + 0.1 * torch.randn(D), "bias": 0.1 * torch.randn(D)})
    states = {"img_model": img_model, "img_map": img_map, "text_model": text_model, "crossatt": crossatt}
    for name, state in states.items():
        torch.save(state, folder / f"{name}.pth")
    text_dir = folder / "bert"
    shutil.copytree(tiny_vocab_dir, text_dir)
    (text_dir / "config.json").write_text(json.dumps({"model_type": "bert", **TEXT}))
    return folder, states


def spec_reference(states, pixel_values, input_ids, attention_mask):
    """v, t and S_k computed from the original tensors with the formulas of docs/method.md."""
    img, img_map, text, cross = (states[k] for k in ("img_model", "img_map", "text_model", "crossatt"))
    resnet = torchvision.models.resnet50(num_classes=7).eval()
    resnet.load_state_dict(
        {k.removeprefix("feature_extractor."): v for k, v in img.items() if k.startswith("feature_extractor.")}
    )
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(pixel_values))))
    scales = []
    for k, layer in enumerate((resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)):
        x = layer(x)
        scales.append(x.amax(dim=(-2, -1)) if k < 3 else x.mean(dim=(-2, -1)))
    lin = lambda state, name, x: F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])  # noqa: E731
    v0 = sum(lin(img, f"fc{k + 1}", s) for k, s in enumerate(scales))
    h = lin(img_map, "fc", v0)
    v = lin(img_map, "fc2", h * torch.sigmoid(lin(img_map, "att", h)))
    bert = BertModel(BertConfig(**TEXT), add_pooling_layer=False).eval()
    bert.load_state_dict({k.removeprefix("bert_model."): v for k, v in text.items() if "pooler" not in k})
    hidden = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    t = F.normalize(hidden[:, 0], dim=-1)
    tokens = hidden[:, 1:]
    ln = lambda name, x: F.layer_norm(x, (D,), cross[f"{name}.weight"], cross[f"{name}.bias"])  # noqa: E731
    scores = torch.zeros(4, len(pixel_values), len(input_ids))
    for k in range(4):
        attention = nn.MultiheadAttention(D, 12).eval()
        attention.load_state_dict(
            {n.removeprefix(f"cross_attn{k + 1}."): w for n, w in cross.items() if n.startswith(f"cross_attn{k + 1}.")}
        )
        for i in range(len(pixel_values)):
            q = lin(cross, f"fc{k + 1}", scales[k][i])
            for j in range(len(input_ids)):
                kv = ln("ln_pre_i", tokens[j])[:, None]  # L×1×d, sequence first as the original
                c, _ = attention(ln("ln_pre_t", q)[None, None], kv, kv)
                scores[k, i, j] = torch.sigmoid(lin(cross, f"match_fc{k + 1}", (c[0, 0] + t[j]) * q))[0]
    return v, t, scores


def run_converter(folder, out, *extra):
    args = [
        "--img-model",
        folder / "img_model.pth",
        "--img-map",
        folder / "img_map.pth",
        "--text-model",
        folder / "text_model.pth",
        "--crossatt",
        folder / "crossatt.pth",
        "--text-config",
        folder / "bert",
        "--out",
        out,
        *extra,
    ]
    return main([str(a) for a in args])


def test_converted_model_computes_the_spec(original, tmp_path, capsys):
    folder, states = original
    assert run_converter(folder, tmp_path / "msa") == 0
    printed = capsys.readouterr().out
    for dropped in (
        "img_model:feature_extractor.fc.weight",
        "img_model:image_patch_proj.weight",
        "text_model:bert_model.pooler.dense.weight",
        "crossatt:ln_post.weight",
        "img_model:norm_layer.bias",
    ):
        assert dropped in printed
    assert "Saved MSAProcessor" in printed
    model = MSAModel.from_pretrained(tmp_path / "msa").eval()
    processor = MSAProcessor.from_pretrained(tmp_path / "msa")
    assert processor.text_max_length == 31 and model.config.mscmat_num_heads == 12
    torch.manual_seed(1)
    pixel_values = torch.randn(2, 3, 64, 64)
    batch = processor(text=["two white planes are parked near the runway", "a river crosses dense farmland"])
    with torch.no_grad():
        out = model(pixel_values=pixel_values, **batch, output_scale_logits=True)
        v, t, scores = spec_reference(states, pixel_values, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(model.get_image_features(pixel_values).detach(), v, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.text_embeds, t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.scale_logits, scores, atol=1e-5, rtol=1e-4)


def test_without_tokenizer_saves_model_and_says_so(original, tmp_path, capsys):
    folder, _ = original
    config_only = tmp_path / "bert_config.json"
    config_only.write_text((folder / "bert" / "config.json").read_text())
    args = [
        "--img-model",
        folder / "img_model.pth",
        "--img-map",
        folder / "img_map.pth",
        "--text-model",
        folder / "text_model.pth",
        "--crossatt",
        folder / "crossatt.pth",
        "--text-config",
        config_only,
        "--out",
        tmp_path / "msa",
    ]
    assert main([str(a) for a in args]) == 0
    assert "No tokenizer found" in capsys.readouterr().out
    assert (tmp_path / "msa" / "model.safetensors").is_file()
    assert not (tmp_path / "msa" / "processor_config.json").exists()


def test_unknown_key_and_existing_output_are_refused(original, tmp_path, capsys):
    folder, states = original
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, state in states.items():
        torch.save({**state, "surprise.weight": torch.zeros(1)} if name == "crossatt" else state, bad / f"{name}.pth")
    (bad / "bert").symlink_to(folder / "bert")
    assert run_converter(bad, tmp_path / "out") == 2
    assert "crossatt:surprise.weight" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing half-written
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("user data")
    assert run_converter(folder, tmp_path / "taken") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "user data"


def test_missing_file_is_a_clear_error(original, tmp_path, capsys):
    folder, _ = original
    args = [
        "--img-model",
        tmp_path / "nope.pth",
        "--img-map",
        folder / "img_map.pth",
        "--text-model",
        folder / "text_model.pth",
        "--crossatt",
        folder / "crossatt.pth",
        "--text-config",
        folder / "bert",
        "--out",
        tmp_path / "msa",
    ]
    assert main([str(a) for a in args]) == 2
    assert "nope.pth does not exist" in capsys.readouterr().err
