"""Model cards: Hub metadata that parses back with huggingface_hub, every figure, and a body a user can act on."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from huggingface_hub import ModelCard

from msa_hf.model_card import (
    RECALL_KEYS,
    Evaluation,
    base_model_ids,
    build_model_card,
    card_from_folder,
    tower_hub_id,
    write_card,
)


def metrics(base: float) -> dict[str, float]:
    """Distinct values per key, so a figure filed under the wrong key or split shows."""
    keys = [*RECALL_KEYS, "i2t_medr", "t2i_medr", "i2t_meanr", "t2i_meanr"]
    return {key: round(base + 1.111 * i, 3) for i, key in enumerate(keys)}


EVALUATIONS = [
    Evaluation("rs-synth", "validation", metrics(10.0)),
    Evaluation("rs-synth", "test", metrics(20.0)),
    Evaluation("ucm-captions", "test", metrics(30.0)),
]
RECIPE = "model: msa-effnetlite0-minilm\ncorpus: rs-synth\nseed: 0\nlearning_rate: 1.0e-05\n"
COMMAND = "python training/train.py training/configs/default.yaml seed=0"


@pytest.fixture
def saved_card(tiny_config, tmp_path) -> ModelCard:
    card = build_model_card(
        tiny_config,
        model_name="msa-demo",
        evaluations=EVALUATIONS,
        base_models=base_model_ids("tf_efficientnet_lite0", "all-MiniLM-L6-v2"),
        recipe=RECIPE,
        command=COMMAND,
        status="trained 3 epochs on rs-synth",
        repo_id="user/msa-demo",
    )
    write_card(card, tmp_path)
    return ModelCard.load(tmp_path / "README.md")


def test_metadata_parses_back_with_the_right_values(saved_card):
    data = saved_card.data
    assert data.library_name == "transformers" and data.license == "apache-2.0"
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert {"remote-sensing", "image-text-retrieval", "msa"} <= set(data.tags)
    assert data.datasets == ["rs-synth", "ucm-captions"]
    assert data.base_model == ["timm/tf_efficientnet_lite0.in1k", "sentence-transformers/all-MiniLM-L6-v2"]
    assert data.model_name == "msa-demo"
    parsed = {(r.dataset_name, r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    expected = {(e.dataset, e.split, key): round(e.metrics[key], 2) for e in EVALUATIONS for key in RECALL_KEYS}
    assert parsed == expected  # every recall and mR, per dataset and split, nothing else
    assert all(r.task_type == "image-text-retrieval" for r in data.eval_results)


def test_body_has_usage_results_protocol_training_limits_and_citation(saved_card):
    text = saved_card.text
    assert 'AutoModel.from_pretrained("user/msa-demo").eval()' in text
    assert 'AutoModel.from_pretrained("user/msa-demo", trust_remote_code=True)' in text
    assert 'AutoProcessor.from_pretrained("user/msa-demo", trust_remote_code=True)' in text
    test_row = EVALUATIONS[1].metrics
    assert f"| rs-synth | test | {test_row['i2t_r1']:.2f} | {test_row['i2t_r5']:.2f} |" in text
    assert "5 captions" in text and "np.argsort(scores)[::-1]" in text and "validation split only" in text
    assert COMMAND in text and RECIPE.strip() in text and "trained 3 epochs on rs-synth" in text
    assert "## Limitations" in text
    assert "@article{yang2024transcending" in text and "arXiv:2405.18959" in text
    assert "A Multi-Scale Alignment Method for Remote Sensing Image-Text Retrieval" in text


def test_card_without_evaluations_says_so(tiny_config):
    card = build_model_card(tiny_config, model_name="m")
    assert "No evaluation was run." in str(card) and card.data.eval_results is None
    assert "path/or/hub-id" in str(card) and "timm `test_resnet`" in str(card)


def test_evaluation_needs_recall_figures():
    with pytest.raises(ValueError, match="none of the recall keys"):
        Evaluation("rs-synth", "test", {"loss": 1.0})
    evaluation = Evaluation.from_dict({"corpus": "data/ucm/dataset_ucm.json", "split": "test", "metrics": metrics(0)})
    assert evaluation.dataset == "ucm" and evaluation.metrics["mr"] == metrics(0)["mr"]


@pytest.mark.parametrize(
    "name, hub_id",
    [
        ("tf_efficientnet_lite0", "timm/tf_efficientnet_lite0.in1k"),
        ("resnet50", "timm/resnet50.a1_in1k"),
        ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("bert-base-uncased", "google-bert/bert-base-uncased"),
        ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32"),
        ("weights.safetensors", None),
    ],
)
def test_tower_names_map_to_hub_ids(name, hub_id):
    assert tower_hub_id(name) == hub_id


def test_same_model_for_both_towers_is_listed_once(tmp_path):
    assert base_model_ids("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32") == [
        "openai/clip-vit-base-patch32"
    ]
    assert base_model_ids(str(tmp_path), "bert-base-uncased") == ["google-bert/bert-base-uncased"]


def test_card_from_folder_reads_recipe_and_metrics(tiny_model_dir, tmp_path):
    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "recipe.yaml").write_text(RECIPE)
    training_record = {"validation": EVALUATIONS[0].metrics, "step": 120, "epoch": 2.0, "corpus": "rs-synth"}
    (folder / "metrics.json").write_text(json.dumps(training_record))  # as training writes best/metrics.json
    (folder / "test_metrics.json").write_text(
        json.dumps({"dataset": "rs-synth", "split": "test", "metrics": EVALUATIONS[1].metrics})
    )
    card = card_from_folder(folder, repo_id="user/msa-best")
    assert card.data.model_name == "user/msa-best" and card.data.datasets == ["rs-synth"]
    assert card.data.base_model == ["timm/tf_efficientnet_lite0.in1k", "sentence-transformers/all-MiniLM-L6-v2"]
    splits = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert splits[("validation", "mr")] == round(EVALUATIONS[0].metrics["mr"], 2)
    assert splits[("test", "mr")] == round(EVALUATIONS[1].metrics["mr"], 2)
    assert RECIPE.strip() in card.text and 'from_pretrained("user/msa-best")' in card.text


def test_flat_metrics_files_are_validation_and_test_of_the_recipe_corpus(tiny_model_dir, tmp_path):
    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "recipe.yaml").write_text("model: msa-tiny\ncorpus: data/ucm-captions/dataset_ucm.json\n")
    (folder / "metrics.json").write_text(json.dumps(EVALUATIONS[0].metrics))
    (folder / "test_metrics.json").write_text(json.dumps(EVALUATIONS[1].metrics))
    card = card_from_folder(folder)
    assert card.data.model_name == "msa-test-resnet-bert-ucm-captions"  # towers + corpus, not the folder ("best")
    assert card.data.datasets == ["ucm-captions"]
    assert {(r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        ("ucm-captions", "validation"),
        ("ucm-captions", "test"),
    }
    assert card.data.base_model is None  # msa-tiny is an architecture: nothing pretrained


def test_card_from_folder_rejects_a_bad_metrics_file(tiny_model_dir, tmp_path):
    folder = tmp_path / "best"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "test_metrics.json").write_text('{"split": "test"')
    with pytest.raises(ValueError, match="test_metrics.json is not an evaluation record"):
        card_from_folder(folder)


def test_write_card_is_an_ordinary_file_and_leaves_no_staging(tiny_config, tmp_path):
    path = write_card(build_model_card(tiny_config, model_name="m"), tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]
