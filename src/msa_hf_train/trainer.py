"""The training loop: Accelerate, MSA's losses, validation-based selection, exact resume.

One process or many (``accelerate launch``, ``torchrun``): each process trains on its shard of
every global batch and the model gathers features across processes, so N processes with batch
B train like one with batch N·B. Evaluation and writing happen on the main process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from msa_hf import PRESETS, MSAConfig, MSAModel, MSAProcessor, param_groups
from msa_hf.hub import resolve_model_source
from msa_hf.io_utils import atomic_directory
from msa_hf.model_card import (
    Evaluation,
    base_model_ids,
    build_model_card,
    config_tower_names,
    model_display_name,
    tower_hub_id,
    write_card,
)
from msa_hf.pretrained_towers import INSTALL_HINT, offline_preset_available
from msa_hf.retrieval import (
    evaluate_corpus,
    format_metrics_table,
    render_retrieval_examples,
    retrieval_metrics_from_embeddings,
)
from msa_hf.retrieval.distributed import processes_use_cpu

from .checkpointing import TrainerState, list_checkpoints, resolve_checkpoint, save_checkpoint
from .data import (
    AUGMENTATIONS,
    EpochBatchSampler,
    TrainingCollator,
    TrainingPairs,
    check_corpus,
    default_cache_dir,
    load_training_corpus,
)
from .feature_cache import load_or_compute_scale_features
from .recipe import Recipe, RecipeError
from .reporting import LOSS_TERMS, append_jsonl, format_duration, plot_training, write_json

logger = logging.getLogger("msa_hf_train")
HUB_FALLBACK_PRESET = "msa-resnet50-bert-base"
FINISHED_MARKER = "test_metrics.json"
SELECTION_METRIC = "mr"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (exit code 1); the last good checkpoint is left as it was."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the state was saved and the run can be resumed."""

    def __init__(self, signal_number: int, checkpoint: Path) -> None:
        self.signal_number = signal_number
        self.checkpoint = checkpoint
        name = signal.Signals(signal_number).name
        super().__init__(f"{name} received: state saved in {checkpoint}; resume with resume_from_checkpoint=latest.")


@dataclasses.dataclass
class TrainingResult:
    output_dir: Path
    best_dir: Path
    best_validation: dict[str, float]
    test_metrics: dict[str, float]
    best_epoch: float
    seconds: float
    test_metrics_expected_ties: dict[str, float] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- checks before heavy work
def check_recipe(recipe: Recipe) -> None:
    """Everything that can be checked without loading data or weights."""
    check_corpus(recipe)
    known = sorted(PRESETS)
    # Neither a folder, a preset nor a Hub id (owner/name):
    if not Path(recipe.model).expanduser().is_dir() and recipe.model not in known and "/" not in recipe.model:
        close = difflib.get_close_matches(recipe.model, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"presets: {known}."
        raise RecipeError(f"model {recipe.model!r} is neither a saved model folder, a preset nor a Hub id; {hint}")
    if recipe.model in PRESETS and not PRESETS[recipe.model].pretrained and recipe.tokenizer is None:
        raise RecipeError(
            f"model {recipe.model!r} is a randomly initialised architecture; it needs `tokenizer` (a tokenizer "
            "folder or Hub id whose vocabulary fits its text tower)."
        )
    reporters = [recipe.report_to] if isinstance(recipe.report_to, str) else list(recipe.report_to)
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available(), "none": True}
    for name in reporters:
        if name not in available:
            raise RecipeError(f"report_to {name!r} is not supported; use 'tensorboard', 'wandb' or 'none'.")
        if not available[name]:
            raise RecipeError(f"report_to {name!r}, but {name} is not installed (pip install {name}).")


def prepare_output_dir(recipe: Recipe) -> Path:
    """Refuse to overwrite a finished run or to silently restart an unfinished one."""
    output_dir = Path(recipe.output_dir).expanduser()
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return output_dir
    finished = (output_dir / FINISHED_MARKER).is_file()
    if recipe.overwrite_output_dir:
        return output_dir
    if recipe.resume_from_checkpoint is not None and not finished:
        return output_dir
    if finished:
        raise RecipeError(
            f"{output_dir} holds a finished run ({FINISHED_MARKER}); choose another output_dir or set "
            "overwrite_output_dir=true to replace it."
        )
    checkpoints = list_checkpoints(output_dir / "checkpoints")
    hint = f"resume it with resume_from_checkpoint=latest (last: {checkpoints[-1].name}), " if checkpoints else ""
    raise RecipeError(f"{output_dir} holds an unfinished run; {hint}or set overwrite_output_dir=true to start over.")


def clear_output_dir(output_dir: Path) -> None:
    """Remove what a previous run wrote (only called with ``overwrite_output_dir=true``)."""
    for name in ("best", "checkpoints", "plots", "logs", "metrics.jsonl", FINISHED_MARKER):
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ----------------------------------------------------------------------------- model
@dataclasses.dataclass
class BuiltModel:
    model: MSAModel
    processor: MSAProcessor
    vision_tower: str
    text_tower: str


def build_model(recipe: Recipe) -> BuiltModel:
    """The model and processor a recipe names: a saved folder, a pretrained-tower preset or an architecture."""
    overrides = dict(recipe.config_overrides)
    if Path(recipe.model).expanduser().is_dir() or recipe.model not in PRESETS:
        folder = resolve_model_source(recipe.model, recipe.revision)  # a saved folder, or a Hub snapshot
        model = MSAModel.from_pretrained(folder, **overrides)
        processor = MSAProcessor.from_pretrained(folder)
        return BuiltModel(model, processor, model.config.vision_backbone, model.config.text_config.model_type)
    if PRESETS[recipe.model].pretrained:
        preset = recipe.model
        if not offline_preset_available(preset) and preset != HUB_FALLBACK_PRESET:
            logger.warning(
                "The offline towers of %s are not installed (%s). Falling back to %s, whose weights timm and "
                "transformers download from the Hugging Face Hub.",
                preset,
                INSTALL_HINT,
                HUB_FALLBACK_PRESET,
            )
            preset = HUB_FALLBACK_PRESET
        model, processor = MSAModel.from_preset(preset, **overrides)
        return BuiltModel(model, processor, PRESETS[preset].vision, PRESETS[preset].text)
    from transformers import AutoTokenizer

    config = MSAConfig.from_preset(recipe.model, **overrides)
    model = MSAModel(config)
    processor = MSAProcessor.from_config(config, AutoTokenizer.from_pretrained(recipe.tokenizer))
    return BuiltModel(model, processor, f"{config.vision_backbone} (random)", f"{recipe.model} text tower (random)")


def apply_freezing(model: MSAModel, recipe: Recipe) -> None:
    if recipe.freeze_vision_stages is not None:
        model.freeze_vision_tower(None if recipe.freeze_vision_stages == "all" else recipe.freeze_vision_stages)
    if recipe.freeze_text_layers is not None:
        model.freeze_text_tower(None if recipe.freeze_text_layers == "all" else recipe.freeze_text_layers)
    if model.config.mscma_weight == 0 and model.config.csmmc_weight == 0:
        model.mscmat.requires_grad_(False)  # not run at all: an unused trainable part would break DDP


def vision_fully_frozen(model: MSAModel) -> bool:
    return not any(p.requires_grad for p in model.vision_model.parameters())


def cacheable_vision_stages(model: MSAModel, recipe: Recipe) -> int | Literal["all"] | None:
    """What the feature cache holds: the whole frozen tower, its frozen first ``k`` stages, or nothing.

    A partly frozen tower is cached up to its last frozen stage when the tower can resume from
    there (timm towers), so only the stages that train run in the loop.
    """
    if not recipe.cache_frozen_vision:
        return None
    if vision_fully_frozen(model):
        return "all"
    stages = recipe.freeze_vision_stages
    if isinstance(stages, int) and stages >= 1 and hasattr(model.vision_model, "forward_from_stage"):
        return stages
    return None


# ----------------------------------------------------------------------------- the loop
class _SignalFlag:
    """Remember the first SIGINT/SIGTERM so the loop can save and stop at the next step boundary."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.received = number

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        key: [t.to(device) for t in value] if isinstance(value, list) else value.to(device)
        for key, value in batch.items()
    }


def _flat_config(recipe: Recipe) -> dict[str, Any]:
    """The recipe as scalars, the only values TensorBoard's hyper-parameter view takes."""
    flat: dict[str, Any] = {}
    for key, value in vars(recipe).items():
        if isinstance(value, dict):
            flat.update(
                {f"{key}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in value.items()}
            )
        else:
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class Trainer:
    """Runs one recipe end to end; see :func:`train`."""

    def __init__(self, recipe: Recipe, command: str) -> None:
        self.recipe = recipe
        self.command = command
        self.output_dir = prepare_output_dir(recipe)
        self.started = time.monotonic()

    # --- setup
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        recipe = self.recipe
        reporters = [recipe.report_to] if isinstance(recipe.report_to, str) else list(recipe.report_to)
        reporters = [name for name in reporters if name != "none"]
        self.accelerator = Accelerator(
            cpu=processes_use_cpu(),
            mixed_precision=recipe.mixed_precision,
            gradient_accumulation_steps=recipe.gradient_accumulation_steps,
            log_with=reporters or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        accelerator = self.accelerator
        self.is_main = accelerator.is_main_process
        self.progress = recipe.progress and self.is_main
        if self.is_main:
            if recipe.overwrite_output_dir and recipe.resume_from_checkpoint is None:
                clear_output_dir(self.output_dir)
            self.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        set_seed(recipe.seed)
        cache_dir = Path(recipe.cache_dir).expanduser() if recipe.cache_dir else default_cache_dir()
        with accelerator.main_process_first():
            self.corpus, self.corpus_name = load_training_corpus(recipe, cache_dir, self.progress)
        for split in ("train", "validation", "test"):
            if split not in self.corpus or len(self.corpus[split]) == 0:
                raise RecipeError(f"corpus {recipe.corpus!r} has no {split!r} images; training needs all three splits.")

        set_seed(recipe.seed)  # the fresh heads start the same whatever happened above
        built = build_model(recipe)
        self.model, self.processor = built.model, built.processor
        self.towers = (built.vision_tower, built.text_tower)
        apply_freezing(self.model, recipe)
        if recipe.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self._set_memory_format(self.model)
        self.model.train()

        cached = None
        cache_stages = cacheable_vision_stages(self.model, recipe)
        if cache_stages is not None:
            args = (self.model, self.processor, self.corpus["train"], AUGMENTATIONS[recipe.augment], cache_dir)
            kwargs = {
                "batch_size": recipe.eval_batch_size,
                "num_workers": recipe.num_workers,
                "progress": self.progress,
                "device": accelerator.device,
                "frozen_stages": None if cache_stages == "all" else cache_stages,
            }
            self.model.to(accelerator.device)
            if self.is_main:
                cached = load_or_compute_scale_features(*args, **kwargs)
            accelerator.wait_for_everyone()
            if not self.is_main:
                cached = load_or_compute_scale_features(*args, **kwargs, compute=False)
        self.cache_stages = cache_stages if cached is not None else None
        self.pairs = TrainingPairs(
            self.corpus["train"], seed=recipe.seed, augment=recipe.augment, with_images=cached is None
        )
        self.sampler = EpochBatchSampler(
            len(self.pairs),
            recipe.per_device_batch_size,
            recipe.seed,
            world_size=accelerator.num_processes,
            rank=accelerator.process_index,
        )
        self.loader = torch.utils.data.DataLoader(
            self.pairs,
            batch_sampler=self.sampler,
            collate_fn=TrainingCollator(self.processor, self.pairs, cached),
            num_workers=0 if cached is not None else recipe.num_workers,
            generator=torch.Generator().manual_seed(recipe.seed),  # keeps the global RNG untouched
        )
        self.steps_per_epoch = len(self.sampler) // recipe.gradient_accumulation_steps
        if self.steps_per_epoch == 0:
            raise RecipeError(
                f"An epoch has {len(self.sampler)} batches per process, fewer than gradient_accumulation_steps="
                f"{recipe.gradient_accumulation_steps}; lower it or per_device_batch_size."
            )
        self.total_steps = recipe.max_steps if recipe.max_steps > 0 else recipe.num_epochs * self.steps_per_epoch
        set_seed(recipe.seed)  # the training RNG stream (dropout) starts here, whatever setup consumed

        from transformers import get_scheduler

        groups = param_groups(
            self.model,
            lr=recipe.learning_rate,
            vision_lr=recipe.vision_lr,
            text_lr=recipe.text_lr,
            weight_decay=recipe.weight_decay,
        )
        optimizer = torch.optim.AdamW(groups, betas=(recipe.adam_beta1, recipe.adam_beta2), eps=recipe.adam_epsilon)
        # Accelerate steps a prepared scheduler once per process per optimizer step.
        scheduler = get_scheduler(
            recipe.lr_scheduler,
            optimizer,
            num_warmup_steps=recipe.warmup_steps * accelerator.num_processes,
            num_training_steps=self.total_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, optimizer, scheduler)
        self.state = TrainerState()
        if recipe.resume_from_checkpoint is not None:
            checkpoint = resolve_checkpoint(recipe.resume_from_checkpoint, self.output_dir / "checkpoints")
            accelerator.load_state(str(checkpoint))
            self.state = TrainerState.load(checkpoint)
            logger.info("Resumed from %s (epoch %d, step %d)", checkpoint, self.state.epoch, self.state.global_step)
        if reporters:
            accelerator.init_trackers("msa_hf", config=_flat_config(recipe))
        self._log_setup()

    def _log_setup(self) -> None:
        if not self.is_main:
            return
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        logger.info(
            "Training %s on %s: %d pairs (%d distinct caption texts), %d steps (%d per epoch) of %d × %d process(es); "
            "%.1f M of %.1f M parameters train; image tower %s.",
            self.recipe.model,
            self.corpus_name,
            len(self.pairs),
            self.pairs.num_distinct_texts,
            self.total_steps,
            self.steps_per_epoch,
            self.recipe.per_device_batch_size,
            self.accelerator.num_processes,
            trainable / 1e6,
            total / 1e6,
            self._vision_mode(),
        )

    def _vision_mode(self) -> str:
        if self.cache_stages is None:
            return "in the loop"
        if self.cache_stages == "all":
            return "frozen, features cached"
        return f"stages 1-{self.cache_stages} frozen and cached, the rest trains"

    def _set_memory_format(self, model: MSAModel) -> None:
        """Channels-last convolutions: 1.5-2x faster image towers on CPUs and GPUs, the same up to rounding."""
        if self.recipe.channels_last:
            model.vision_model.to(memory_format=torch.channels_last)

    # --- evaluation and saving
    def _unwrapped(self) -> MSAModel:
        return self.accelerator.unwrap_model(self.model)

    def evaluate(self, split: str, model: MSAModel | None = None) -> Any:
        """Retrieval on a corpus split with ``msa_hf.retrieval.evaluate_corpus`` (what ``msa-eval`` runs)."""
        model = model or self._unwrapped()
        was_training = model.training
        model.eval()
        try:
            result = evaluate_corpus(
                model,
                self.processor,
                self.corpus[split],
                batch_size=self.recipe.eval_batch_size,
                num_workers=self.recipe.num_workers,
                progress=self.progress,
            )
        finally:
            model.train(was_training)
        return result

    def _card(self, evaluations: list[tuple[str, dict[str, float]]], status: str) -> Any:
        vision, text = self.towers
        config = self._unwrapped().config
        if self.recipe.model in PRESETS and PRESETS[self.recipe.model].pretrained:
            base_models = base_model_ids(vision, text)
            title_towers = (vision, text)
        else:  # fine-tuning a Hub checkpoint: that checkpoint is the base (an architecture preset has none)
            base_models = [hub_id] if (hub_id := tower_hub_id(self.recipe.model)) else []
            title_towers = config_tower_names(config)
        return build_model_card(
            config,
            model_name=self.recipe.hub_repo_id or model_display_name(*title_towers, self.corpus_name),
            evaluations=[Evaluation(self.corpus_name, split, metrics) for split, metrics in evaluations],
            base_models=base_models,
            vision_tower=vision,
            text_tower=text,
            recipe=self.recipe.to_yaml(),
            command=self.command,
            status=status,
            repo_id=self.recipe.hub_repo_id,
        )

    def save_best(self, metrics: dict[str, float]) -> None:
        best_dir = self.output_dir / "best"
        with atomic_directory(best_dir) as staging:
            self._unwrapped().save_pretrained(staging)
            self.processor.save_pretrained(staging)
            (staging / "recipe.yaml").write_text(self.recipe.to_yaml())
            write_json(
                staging / "metrics.json",
                {
                    "validation": metrics,
                    "step": self.state.global_step,
                    "epoch": self._epoch_position(),
                    "corpus": self.corpus_name,
                },
            )
            status = f"trained with msa_hf_train; selected by validation mR at epoch {self._epoch_position():.2f}"
            self._card([("validation", metrics)], status).save(staging / "README.md")

    def _epoch_position(self) -> float:
        return round(self.state.global_step / self.steps_per_epoch, 4)

    def run_evaluation(self) -> None:
        if self.is_main:
            metrics = self.evaluate("validation").metrics
            record = {
                "step": self.state.global_step,
                "epoch": self._epoch_position(),
                "split": "validation",
                "metrics": metrics,
            }
            self.state.evaluations.append(record)
            append_jsonl(self.output_dir / "metrics.jsonl", record)
            self.accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=self.state.global_step)
            improved = self.state.best_metric is None or metrics[SELECTION_METRIC] > self.state.best_metric
            if improved:
                self.state.best_metric = metrics[SELECTION_METRIC]
                self.state.best_step = self.state.global_step
                self.state.best_epoch = self._epoch_position()
                self.save_best(metrics)
            plot_training(self.state.losses, self.state.evaluations, self.output_dir / "plots")
            logger.info(
                "validation at step %d: mR %.2f (i2t R@1 %.2f, t2i R@1 %.2f)%s",
                self.state.global_step,
                metrics["mr"],
                metrics["i2t_r1"],
                metrics["t2i_r1"],
                " - new best" if improved else "",
            )
        self.accelerator.wait_for_everyone()

    def save(self) -> Path:
        return save_checkpoint(self.accelerator, self.output_dir / "checkpoints", self.state, self.recipe.keep_last)

    # --- training
    def _any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One micro-batch; returns the loss terms (the optimizer steps once per accumulation cycle)."""
        accelerator = self.accelerator
        with accelerator.accumulate(self.model):
            out = self.model(**_to_device(batch, accelerator.device), return_loss=True)
            terms = {name: float(value.detach()) for name in LOSS_TERMS if (value := getattr(out, name)) is not None}
            if self._any_process(not math.isfinite(terms["loss"])):
                raise TrainingDiverged(
                    f"The loss became non-finite at step {self.state.global_step + 1} (epoch {self.state.epoch}): "
                    f"{terms}. Nothing was updated; the last good checkpoint is "
                    f"{(list_checkpoints(self.output_dir / 'checkpoints') or ['(none)'])[-1]}. Lower learning_rate, "
                    "set max_grad_norm, or turn mixed_precision off."
                )
            accelerator.backward(out.loss)
            if accelerator.sync_gradients and self.recipe.max_grad_norm:
                accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return terms

    def _due(self, every: int | str, end_of_epoch: bool) -> bool:
        return end_of_epoch if every == "epoch" else self.state.global_step % int(every) == 0

    def fit(self) -> None:
        recipe, state = self.recipe, self.state
        accum = recipe.gradient_accumulation_steps
        bar = tqdm(
            total=self.total_steps, initial=state.global_step, desc="Training", unit="step", disable=not self.progress
        )
        window: list[dict[str, float]] = []
        with _SignalFlag() as interrupted, bar:
            while state.global_step < self.total_steps:
                self.sampler.start(state.epoch, skip=state.batches_done)
                micro: list[dict[str, float]] = []
                for batch in self.loader:
                    if state.batches_done >= self.steps_per_epoch * accum:
                        break  # the leftover micro-batches that cannot fill an accumulation cycle
                    micro.append(self.train_step(batch))
                    state.batches_done += 1
                    if len(micro) < accum:
                        continue
                    state.global_step += 1
                    step_terms = {name: sum(m[name] for m in micro) / accum for name in micro[0]}
                    micro = []
                    window.append(step_terms)
                    bar.update(1)
                    bar.set_postfix({name.removeprefix("loss_"): f"{value:.3f}" for name, value in step_terms.items()})
                    if state.global_step % recipe.log_every == 0 or state.global_step == self.total_steps:
                        averaged = {name: sum(w[name] for w in window) / len(window) for name in window[0]}
                        averaged["lr"] = self.scheduler.get_last_lr()[-1]
                        state.losses.append({"step": state.global_step, **averaged})
                        self.accelerator.log({f"train/{k}": v for k, v in averaged.items()}, step=state.global_step)
                        window = []
                    end_of_epoch = state.batches_done >= self.steps_per_epoch * accum
                    finished = state.global_step >= self.total_steps
                    if end_of_epoch:
                        state.epoch += 1
                        state.batches_done = 0
                    if self._due(recipe.eval_every, end_of_epoch) or finished:
                        self.run_evaluation()
                    if self._due(recipe.save_every, end_of_epoch) or end_of_epoch or finished:
                        self.save()
                    if self._any_process(interrupted.received is not None):
                        checkpoint = self.save()
                        raise TrainingInterrupted(interrupted.received or signal.SIGTERM, checkpoint)
                    if finished or end_of_epoch:
                        break

    # --- the end
    def test(self) -> TrainingResult:
        best_dir = self.output_dir / "best"
        test_metrics: dict[str, float] = {}
        expected_ties: dict[str, float] = {}
        if self.is_main:
            model = MSAModel.from_pretrained(str(best_dir)).to(self.accelerator.device)
            self._set_memory_format(model)
            result = self.evaluate("test", model)
            test_metrics = result.metrics
            expected_ties = retrieval_metrics_from_embeddings(
                result.image_embeds, result.text_embeds, result.caption_image_ids, normalize=False, ties="expected"
            )
            images = self.corpus["test"].select_columns(["image"])
            render_retrieval_examples(
                result.image_embeds,
                result.text_embeds,
                result.caption_image_ids,
                result.captions,
                lambda i: images[int(i)]["image"],
                self.output_dir / "plots" / "test_retrieval_examples.png",
                seed=self.recipe.seed,
            )
            write_json(
                self.output_dir / FINISHED_MARKER,
                {
                    "test": test_metrics,
                    "test_expected_ties": expected_ties,
                    "best_step": self.state.best_step,
                    "best_epoch": self.state.best_epoch,
                    "corpus": self.corpus_name,
                    "command": self.command,
                },
            )
            best = self.state.evaluations[[e["step"] for e in self.state.evaluations].index(self.state.best_step)]
            status = (
                f"trained with msa_hf_train; selected by validation mR (epoch {self.state.best_epoch:.2f}); "
                "test evaluated once"
            )
            card = self._card([("validation", best["metrics"]), ("test", test_metrics)], status)
            write_card(card, best_dir)
            if self.recipe.push_to_hub:
                from msa_hf.hub import push_to_hub

                push_to_hub(best_dir, self.recipe.hub_repo_id)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        best_validation = self.state.evaluations[-1]["metrics"] if self.state.evaluations else {}
        for evaluation in self.state.evaluations:
            if evaluation["step"] == self.state.best_step:
                best_validation = evaluation["metrics"]
        return TrainingResult(
            self.output_dir,
            best_dir,
            best_validation,
            test_metrics,
            self.state.best_epoch or 0.0,
            time.monotonic() - self.started,
            expected_ties,
        )

    def summary(self, result: TrainingResult) -> str:
        lines = [
            "",
            f"Test retrieval on {self.corpus_name}/test of the best checkpoint (selected on validation):",
            format_metrics_table(result.test_metrics),
            "",
            f"Finished in {format_duration(result.seconds)}.",
            f"  best:        epoch {result.best_epoch:.2f} (step {self.state.best_step}), "
            f"validation mR {result.best_validation.get('mr', float('nan')):.2f}, test mR {result.test_metrics['mr']:.2f}",
            *(
                [
                    f"  ties:        test mR {result.test_metrics_expected_ties['mr']:.2f} with tied items in random "
                    "order (identical captions of different images; test_metrics.json)"
                ]
                if result.test_metrics_expected_ties.get("mr", result.test_metrics["mr"]) != result.test_metrics["mr"]
                else []
            ),
            f"  model:       {result.best_dir}   (MSAModel.from_pretrained / AutoModel.from_pretrained)",
            f"  metrics:     {self.output_dir / 'metrics.jsonl'} (validation), {self.output_dir / FINISHED_MARKER} (test)",
            f"  plots:       {self.output_dir / 'plots'}",
            f"  checkpoints: {self.output_dir / 'checkpoints'} (resume with resume_from_checkpoint=latest)",
        ]
        return "\n".join(lines)


def train(recipe: Recipe, command: str = "python training/train.py") -> TrainingResult:
    """Train, select on validation, test the selection once, and report; see ``training/train.py``."""
    check_recipe(recipe)
    trainer = Trainer(recipe, command)
    trainer.setup()
    trainer.fit()
    result = trainer.test()
    if trainer.is_main:
        print(trainer.summary(result), flush=True)
    return result


__all__ = [
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingResult",
    "Trainer",
    "apply_freezing",
    "build_model",
    "check_recipe",
    "prepare_output_dir",
    "train",
]
