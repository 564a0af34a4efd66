"""Model cards: metadata the Hub reads, numbers as given, a loadable usage snippet."""

from huggingface_hub import ModelCard

from msa_hf.model_card import build_model_card

METRICS = {
    "i2t_r1": 12.345,
    "i2t_r5": 30.0,
    "i2t_r10": 41.0,
    "t2i_r1": 9.5,
    "t2i_r5": 28.25,
    "t2i_r10": 40.0,
    "mr": 26.85,
}


def test_card_carries_metrics_and_command(tiny_config, tmp_path):
    card = build_model_card(
        tiny_config,
        model_name="msa-demo",
        vision_tower="timm test_resnet",
        text_tower="tiny BERT",
        command="python training/run_default.py --out x",
        status="heads untrained",
        dataset_name="rs-synth",
        metrics=METRICS,
        base_models=["timm/test_resnet"],
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.model_name == "msa-demo" and "remote-sensing" in loaded.data.tags
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert results == {"i2t_r1": 12.35, "t2i_r1": 9.5, "mr": 26.85}
    text = loaded.text
    assert "| rs-synth | test | 12.35 | 30.00 | 41.00 | 9.50 | 28.25 | 40.00 | 26.85 |" in text
    assert "python training/run_default.py --out x" in text and "4 scales" in text


def test_card_without_metrics_says_so(tiny_config):
    card = build_model_card(
        tiny_config, model_name="m", vision_tower="v", text_tower="t", command="c", status="s", dataset_name="d"
    )
    assert "No evaluation was run." in str(card) and card.data.eval_results is None
