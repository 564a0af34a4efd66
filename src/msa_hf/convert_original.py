"""Convert checkpoints of the authors' MSA code into a ``from_pretrained`` folder.

The original saves four plain state dicts (docs/method.md, section 8): the image tower
(``img_model``), the gated MLP (``img_map``), BERT (``text_model``) and MSCMAT
(``crossatt``). Every used tensor is mapped one to one; the unused ones are dropped and
listed; anything else is an error, so a silent half-conversion cannot happen.

Usage:

    python -m msa_hf.convert_original --img-model img_model.pth --img-map img_map.pth \
        --text-model text_model.pth --crossatt crossatt.pth --text-config bert-base-uncased/ \
        --out msa-rsitmd
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_utils import existing_path, run_command
from .io_utils import atomic_directory

if TYPE_CHECKING:  # the model code (torch, transformers) loads only when a conversion runs, not for --help
    import torch

    from .configuration_msa import MSAConfig
    from .modeling_msa import MSAModel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")

# Keys the original saves but never uses in a forward pass.
UNUSED_PATTERNS = {
    "img_model": (
        r"feature_extractor\.fc\..*",
        r"norm_layer\..*",
        r"image_channel_reduce\..*",
        r"image_patch_proj\..*",
    ),
    "img_map": (),
    "text_model": (r"bert_model\.pooler\..*", r"bert_model\.embeddings\.position_ids"),
    "crossatt": (r"ln_post\..*",),
}

# (original file, regex on the original key, replacement giving our key)
KEY_RULES: list[tuple[str, str, str]] = [
    ("img_model", r"feature_extractor\.(.*)", r"vision_model.backbone.\1"),
    ("img_model", r"fc(\d+)\.(weight|bias)", "image_projection.scale_projections.{k}.\\2"),
    ("img_map", r"fc\.(weight|bias)", r"image_projection.fc.\1"),
    ("img_map", r"att\.(weight|bias)", r"image_projection.gate.\1"),
    ("img_map", r"fc2\.(weight|bias)", r"image_projection.out.\1"),
    ("text_model", r"bert_model\.(.*)", r"text_model.\1"),
    ("crossatt", r"fc(\d+)\.(weight|bias)", "mscmat.query_projections.{k}.\\2"),
    ("crossatt", r"cross_attn(\d+)\.(.*)", "mscmat.attentions.{k}.\\2"),
    ("crossatt", r"match_fc(\d+)\.(weight|bias)", "mscmat.match_heads.{k}.\\2"),
    ("crossatt", r"ln_pre_t\.(weight|bias)", r"mscmat.query_norm.\1"),
    ("crossatt", r"ln_pre_i\.(weight|bias)", r"mscmat.text_norm.\1"),
]


class ConversionError(ValueError):
    """The original checkpoint does not fit the MSA layout."""


def map_original_keys(states: dict[str, dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename the four original state dicts into MSAModel keys.

    Returns the mapped state dict and the sorted list of dropped ``file:key`` entries.
    Raises `ConversionError` for a key that is neither mapped nor known to be unused.
    """
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for source, state in states.items():
        for key, tensor in state.items():
            if any(re.fullmatch(pattern, key) for pattern in UNUSED_PATTERNS[source]):
                dropped.append(f"{source}:{key}")
                continue
            for rule_source, pattern, replacement in KEY_RULES:
                match = re.fullmatch(pattern, key) if rule_source == source else None
                if match is None:
                    continue
                target = match.expand(replacement)
                if "{k}" in target:  # original scales count from 1
                    target = target.replace("{k}", str(int(match.group(1)) - 1))
                mapped[target] = tensor
                break
            else:
                unknown.append(f"{source}:{key}")
    if unknown:
        raise ConversionError(f"{len(unknown)} original keys have no place in MSA, e.g. {unknown[:5]}.")
    return mapped, sorted(dropped)


def infer_config(
    states: dict[str, dict[str, torch.Tensor]], text_config: Any, vision_backbone: str, num_heads: int, image_size: int
) -> MSAConfig:
    """An MSAConfig whose shapes match the checkpoint (number of scales from ``fcK``)."""
    from .configuration_msa import MSAConfig

    scales = sorted(int(m.group(1)) for key in states["img_model"] if (m := re.fullmatch(r"fc(\d+)\.weight", key)))
    if not scales:
        raise ConversionError("img_model has no fc1..fcK scale projections; is it an MSA image tower?")
    pooling = ["max"] * (len(scales) - 1) + ["avg"]
    return MSAConfig(
        vision_backbone=vision_backbone,
        vision_out_indices=tuple(scales),
        vision_pooling=pooling,
        image_size=image_size,
        text_config=text_config,
        mscmat_num_heads=num_heads,
    )


def read_text_config(path: str | Path) -> Any:
    """A BERT config from a folder (``config.json``) or a JSON file; ``model_type`` defaults to bert."""
    path = Path(path)
    if path.is_dir():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, local_files_only=True)
    if not path.is_file():
        raise FileNotFoundError(f"--text-config {path} is neither a folder with config.json nor a JSON file.")
    config = json.loads(path.read_text())
    config.setdefault("model_type", "bert")
    return config


def find_tokenizer_dir(text_config: Path, tokenizer: Path | None) -> Path | None:
    if tokenizer is not None:
        if not tokenizer.is_dir():
            raise FileNotFoundError(f"--tokenizer {tokenizer} is not a folder.")
        return tokenizer
    if text_config.is_dir() and any((text_config / name).is_file() for name in TOKENIZER_FILES):
        return text_config
    return None


def convert(
    img_model: str | Path,
    img_map: str | Path,
    text_model: str | Path,
    crossatt: str | Path,
    text_config: str | Path,
    out: str | Path,
    tokenizer: str | Path | None = None,
    vision_backbone: str = "resnet50",
    num_heads: int = 12,
    image_size: int = 224,
    overwrite: bool = False,
) -> MSAModel:
    """Convert the four original files into ``out`` (written atomically) and return the model."""
    from transformers import AutoTokenizer

    from .modeling_msa import MSAModel
    from .pretrained_towers import read_state_dict
    from .processing_msa import MSAProcessor

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it.")
    states = {
        "img_model": read_state_dict(img_model),
        "img_map": read_state_dict(img_map),
        "text_model": read_state_dict(text_model),
        "crossatt": read_state_dict(crossatt),
    }
    config = infer_config(states, read_text_config(text_config), vision_backbone, num_heads, image_size)
    model = MSAModel(config)
    mapped, dropped = map_original_keys(states)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    if missing or extra:
        raise ConversionError(
            f"Checkpoint does not match MSAModel({vision_backbone}): missing {missing[:5]} ({len(missing)}), "
            f"unexpected {extra[:5]} ({len(extra)})."
        )
    wrong = [
        f"{k}: {tuple(mapped[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if mapped[k].shape != v.shape
    ]
    if wrong:
        raise ConversionError(f"{len(wrong)} tensors have the wrong shape, e.g. {wrong[:3]}.")
    model.load_state_dict(mapped, strict=True)
    model.eval()

    tokenizer_dir = find_tokenizer_dir(Path(text_config), Path(tokenizer) if tokenizer else None)
    with atomic_directory(out) as staging:
        model.save_pretrained(staging)
        if tokenizer_dir is not None:
            text_tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
            MSAProcessor.from_config(config, text_tokenizer).save_pretrained(staging)

    print(f"Mapped {len(mapped)} tensors into {out}.")
    print(f"Dropped {len(dropped)} unused original tensors:")
    for key in dropped:
        print(f"  {key}")
    if tokenizer_dir is None:
        print(
            "No tokenizer found beside --text-config; saved the model only. Pass --tokenizer DIR to add the processor."
        )
    else:
        print(f"Saved MSAProcessor with the tokenizer from {tokenizer_dir}.")
    return model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msa-convert-original", description=__doc__.split("\n\n")[0])
    checkpoint = existing_path("a .pth file of the original code")
    parser.add_argument("--img-model", required=True, type=checkpoint, help="original img_model .pth")
    parser.add_argument("--img-map", required=True, type=checkpoint, help="original img_map .pth")
    parser.add_argument("--text-model", required=True, type=checkpoint, help="original text_model .pth")
    parser.add_argument("--crossatt", required=True, type=checkpoint, help="original crossatt .pth")
    parser.add_argument(
        "--text-config",
        required=True,
        type=existing_path("a BERT config folder (config.json) or JSON file"),
        help="BERT config folder (config.json) or JSON file",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        type=existing_path("a tokenizer folder"),
        help="tokenizer folder, if not beside --text-config",
    )
    parser.add_argument("--out", required=True, help="output folder for from_pretrained")
    parser.add_argument("--vision-backbone", default="resnet50", help="timm name of the image tower")
    parser.add_argument("--num-heads", type=int, default=12, help="MSCMAT attention heads")
    parser.add_argument("--image-size", type=int, default=224, help="square input side of the image tower")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    return parser


def _run(args: argparse.Namespace) -> int:
    convert(
        args.img_model,
        args.img_map,
        args.text_model,
        args.crossatt,
        args.text_config,
        args.out,
        tokenizer=args.tokenizer,
        vision_backbone=args.vision_backbone,
        num_heads=args.num_heads,
        image_size=args.image_size,
        overwrite=args.overwrite,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``msa-convert-original``; exit 0 on success, 2 for bad input (see `msa_hf.cli_utils`)."""
    return run_command("msa-convert-original", _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
