"""Per-tower parameter groups."""

import torch

from msa_hf import MSAModel, param_groups


def test_groups_split_towers_and_skip_frozen(tiny_config):
    model = MSAModel(tiny_config)
    model.freeze_text_tower(1)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, vision_lr=1e-5, text_lr=2e-5, weight_decay=0.05)}
    assert (groups["vision"]["lr"], groups["text"]["lr"], groups["heads"]["lr"]) == (1e-5, 2e-5, 1e-4)
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["vision"] == {id(p) for p in model.vision_model.parameters()}
    assert ids["text"] == {id(p) for p in model.text_model.parameters() if p.requires_grad}
    heads = {id(p) for n, p in model.named_parameters() if not n.startswith(("vision_model", "text_model"))}
    assert ids["heads"] == heads
    assert all(g["weight_decay"] == 0.05 for g in groups.values())
    torch.optim.AdamW(list(groups.values()))  # accepted by a real optimizer


def test_defaults_are_the_original_recipe(tiny_config):
    groups = param_groups(MSAModel(tiny_config))
    assert {g["lr"] for g in groups} == {1e-5} and {g["weight_decay"] for g in groups} == {0.1}
    model = MSAModel(tiny_config)
    model.freeze_vision_tower()
    assert [g["name"] for g in param_groups(model)] == ["text", "heads"]
