"""Tiny random transformers tower folders, written by the tests (no Hub)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertTokenizer, CLIPConfig, CLIPModel


def write_clip_folder(folder: Path, vocab_dir: Path, text_width: int = 32, vision_layers: int = 4) -> Path:
    """A tiny random CLIP (both towers) with a BERT vocabulary: what `MSAModel.from_backbones` reads."""
    config = CLIPConfig(
        text_config={
            "vocab_size": 128,
            "hidden_size": text_width,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "max_position_embeddings": 32,
            "eos_token_id": 3,
        },
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(3)
    CLIPModel(config).save_pretrained(folder)
    BertTokenizer.from_pretrained(vocab_dir).save_pretrained(folder)
    return folder
