"""The training loop: Accelerate, MSA's losses, validation-based selection, exact resume.

One process or many (``accelerate launch``, ``torchrun``): each process trains on its shard of
every global batch and the model gathers features across processes, so N processes with batch
B train like one with batch N·B. Evaluation and writing happen on the main process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import math
import pickle
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import BertTokenizer

from msa_hf import PRESETS, MSAConfig, MSAModel, MSATrainingInputs, param_groups
from msa_hf.factory import CreatedModel, create_model_and_processor, is_preset, merge_config_overrides
from msa_hf.io_utils import atomic_directory, atomic_write_json
from msa_hf.model_card import (
    CORPUS_KEY,
    METRICS_FILE,
    RECIPE_FILE,
    TEST_METRICS_FILE,
    Evaluation,
    build_model_card,
    dataset_display_name,
    model_display_name,
    write_card,
)
from msa_hf.pretrained_towers import load_tokenizer
from msa_hf.retrieval import (
    TIE_RULES,
    EvaluationResult,
    evaluate_corpus,
    format_metrics_table,
    render_retrieval_examples,
)
from msa_hf.retrieval.distributed import processes_use_cpu
from msa_hf.sources import is_hub_id

from .checkpointing import (
    CheckpointError,
    TrainerState,
    checkpoint_name,
    identity_changes,
    list_checkpoints,
    load_ema_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from .data import (
    AUGMENTATIONS,
    EpochBatchSampler,
    TrainingCollator,
    TrainingPairs,
    check_corpus,
    corpus_fingerprint,
    default_cache_dir,
    load_training_corpus,
)
from .feature_cache import load_or_compute_scale_features
from .recipe import Recipe, RecipeError
from .reporting import append_jsonl, format_duration, loss_record, plot_training, rewrite_jsonl
from .streaming import (
    StreamingBatches,
    TooManyBadImages,
    load_evaluation_splits,
    processes_any,
    resolve_stream_source,
)

logger = logging.getLogger("msa_hf_train")
FINISHED_MARKER = TEST_METRICS_FILE
# What a run writes into output_dir (and overwrite_output_dir=true removes).
RUN_OUTPUTS = ("best", "checkpoints", "plots", "logs", "metrics.jsonl", FINISHED_MARKER)
SELECTION_METRIC = "mr"
# Recipe keys that change where and how a run reports, not what it trains: a resume may change them.
NOT_COMPARED = frozenset(
    {
        "output_dir",
        "cache_dir",
        "resume_from_checkpoint",
        "resume_allow_changes",
        "overwrite_output_dir",
        "report_to",
        "log_every",
        "progress",
        "push_to_hub",
        "hub_repo_id",
        "num_workers",
        "keep_last",
        "eval_batch_size",
        "eval_every",
        "save_every",
        "max_bad_fraction",
    }
)
# Recipe keys of streaming=true: in a run's identity only when it streams.
STREAMING_KEYS = frozenset({"streaming", "shuffle_buffer", "max_bad_fraction"})
# Random-tower presets whose small vocabulary ships here: 5 specials, 2 marks, a-z and ##a-z, 69 rs-synth words.
PRESET_TOKENIZERS = {"msa-tiny": Path(__file__).resolve().parent / "tokenizers" / "msa-tiny"}


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
    test_metrics_argsort_ties: dict[str, float] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- checks before heavy work
def check_recipe(recipe: Recipe) -> None:
    """Everything that can be checked without loading data or weights."""
    check_corpus(recipe)
    known = sorted(PRESETS)
    folder = Path(recipe.model).expanduser().is_dir()
    if not (folder or is_preset(recipe.model) or is_hub_id(recipe.model, with_owner=True)):
        close = difflib.get_close_matches(recipe.model, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"presets: {known}."
        raise RecipeError(
            f"model {recipe.model!r} is neither a saved model folder, a preset nor a Hub id (owner/name); {hint}"
        )
    random_towers = recipe.model in PRESETS and not PRESETS[recipe.model].pretrained
    if random_towers and recipe.tokenizer is None and recipe.model not in PRESET_TOKENIZERS:
        raise RecipeError(
            f"model {recipe.model!r} is a randomly initialised architecture; it needs `tokenizer` (a tokenizer "
            "folder or Hub id whose vocabulary fits its text tower)."
        )
    check_config_overrides(recipe)
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
    if not any((output_dir / name).exists() for name in RUN_OUTPUTS):
        others = sorted(p.name for p in output_dir.iterdir())
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise RecipeError(
            f"{output_dir} is not empty and holds no training run ({', '.join(others[:3])}{more}); "
            "choose a new or empty output_dir."
        )
    checkpoints = list_checkpoints(output_dir / "checkpoints")
    hint = f"resume it with resume_from_checkpoint=latest (last: {checkpoints[-1].name}), " if checkpoints else ""
    raise RecipeError(f"{output_dir} holds an unfinished run; {hint}or set overwrite_output_dir=true to start over.")


def clear_output_dir(output_dir: Path) -> None:
    """Remove what a previous run wrote (only called with ``overwrite_output_dir=true``)."""
    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ----------------------------------------------------------------------------- model
def check_config_overrides(recipe: Recipe) -> None:
    """Refuse unknown ``config_overrides`` keys (nested ones too) before any heavy work, where the config is local."""
    if not recipe.config_overrides:
        return
    if is_preset(recipe.model):
        base = MSAConfig.from_preset(recipe.model)
    elif (Path(recipe.model).expanduser() / "config.json").is_file():
        base = MSAConfig.from_pretrained(Path(recipe.model).expanduser())
    else:  # a Hub id: checked by build_model once downloaded
        return
    merge_config_overrides(base.to_dict(), recipe.config_overrides)


def build_model(recipe: Recipe) -> CreatedModel:
    """The model, processor and origin a recipe names (:func:`msa_hf.create_model_and_processor`)."""
    tokenizer = None
    if is_preset(recipe.model) and not PRESETS[recipe.model].pretrained:
        if recipe.tokenizer is not None:
            tokenizer = load_tokenizer(recipe.tokenizer)
        else:  # the WordPiece vocabulary shipped for the preset
            tokenizer = BertTokenizer.from_pretrained(PRESET_TOKENIZERS[recipe.model])
    return create_model_and_processor(recipe.model, recipe.revision, tokenizer=tokenizer, **recipe.config_overrides)


def apply_freezing(model: MSAModel, recipe: Recipe) -> None:
    if recipe.freeze_vision_stages is not None:
        model.freeze_vision_tower(recipe.freeze_vision_stages)
    if recipe.freeze_text_layers is not None:
        model.freeze_text_tower(recipe.freeze_text_layers)
    if not model.uses_mscmat:
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


def _portable(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without where it was loaded from or which transformers wrote it (nested configs too)."""
    return {
        key: _portable(value) if isinstance(value, dict) else value
        for key, value in config.items()
        if key not in ("_name_or_path", "transformers_version")
    }


def _finite_batch(batch: dict[str, Any]) -> bool:
    """Whether every floating-point input of a batch is finite (else the data, not the weights, made a loss NaN)."""
    tensors = [t for value in batch.values() for t in (value if isinstance(value, list) else [value])]
    return all(torch.isfinite(t).all() for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())


@contextlib.contextmanager
def _disk_errors(target: Path, kept: str) -> Iterator[None]:
    """Turn a failed write (a full disk: OSError, or safetensors' own error) into one line saying what is safe."""
    try:
        yield
    except (OSError, SafetensorError) as error:
        if isinstance(error, (FileExistsError, IsADirectoryError, NotADirectoryError)):
            raise  # a path in the way: bad input, with its own message
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"Could not write {target} ({reason}). Nothing was lost: the unfinished copy was removed and {kept} "
            "are whole. Free space, then resume with resume_from_checkpoint=latest."
        ) from None


def _short_reason(error: BaseException) -> str:
    """One line about ``error``; torch's refusal to unpickle is said plainly, without its advice to run the pickle."""
    if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in str(error):
        return "it is a pickle holding more than tensors, which is not loaded since that could run code"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


def _other_tie_rules(result: EvaluationResult) -> dict[str, dict[str, float]]:
    """The metrics under the tie rules other than ``metrics``' own (ties against the model)."""
    by_rule = result.metrics_by_tie_rule()
    return {rule: by_rule[rule] for rule in TIE_RULES if rule != "pessimistic"}


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated batch as `MSAModel.forward` keywords on ``device``.

    The fields only a trainer has (cached image-tower features, the text ids of the extra
    positives) go into one `MSATrainingInputs`, by their names; tokens, pixels and image ids stay
    the keywords any caller passes.
    """
    moved = {
        key: [t.to(device) for t in value] if isinstance(value, list) else value.to(device)
        for key, value in batch.items()
    }
    names = [field.name for field in dataclasses.fields(MSATrainingInputs)]
    training = {name: moved.pop(name) for name in names if name in moved}
    return {**moved, "training_inputs": MSATrainingInputs(**training)}


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
        self.creates_output_dir = not self.output_dir.exists()
        self.started = time.monotonic()

    def remove_empty_output_dir(self) -> None:
        """After a refusal or failure in setup, remove the ``output_dir`` this run created if it is still empty."""
        written = self.output_dir.is_dir() and any(p.is_file() or p.is_symlink() for p in self.output_dir.rglob("*"))
        if self.creates_output_dir and self.output_dir.is_dir() and not written:
            shutil.rmtree(self.output_dir)

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
        self.stream_source = resolve_stream_source(recipe.corpus, recipe.revision) if recipe.streaming else None
        with accelerator.main_process_first():
            if self.stream_source is not None:  # the train split streams; validation and test stay map-style
                self.corpus = load_evaluation_splits(self.stream_source)
                self.corpus_name = dataset_display_name(recipe.corpus)
            else:
                self.corpus, self.corpus_name = load_training_corpus(recipe, cache_dir, self.progress)
        for split in ("validation", "test") if recipe.streaming else ("train", "validation", "test"):
            if split not in self.corpus or len(self.corpus[split]) == 0:
                raise RecipeError(f"corpus {recipe.corpus!r} has no {split!r} images; training needs all three splits.")

        set_seed(recipe.seed)  # the fresh heads start the same whatever happened above
        built = build_model(recipe)
        self.model, self.processor, self.origin = built
        apply_freezing(self.model, recipe)
        if recipe.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self._set_memory_format(self.model)
        self.model.train()

        cached = None
        cache_stages = cacheable_vision_stages(self.model, recipe)
        if cache_stages is not None and recipe.streaming:
            logger.warning(
                "cache_frozen_vision is off with streaming=true: the cache holds every training image's features, "
                "which a stream never has at hand; the frozen vision stages run in the loop (without gradients)."
            )
            cache_stages = None
        if cache_stages is not None:
            args = (self.model, self.processor, self.corpus["train"], AUGMENTATIONS[recipe.augment], cache_dir)
            kwargs = {
                "batch_size": recipe.eval_batch_size,
                "num_workers": recipe.num_workers,
                "progress": self.progress,
                "device": accelerator.device,
                "frozen_stages": cache_stages,
            }
            self.model.to(accelerator.device)
            if self.is_main:
                cached = load_or_compute_scale_features(*args, **kwargs)
            accelerator.wait_for_everyone()
            if not self.is_main:
                cached = load_or_compute_scale_features(*args, **kwargs, compute=False)
        self.cache_stages = cache_stages if cached is not None else None
        self.stream: StreamingBatches | None = None
        self.stream_position: dict[str, Any] | None = None  # this process's place in the stream (streaming only)
        if self.stream_source is not None:
            self.stream = StreamingBatches(
                self.stream_source, self.processor, recipe, accelerator.num_processes, accelerator.process_index
            )
            known = self.stream.steps_per_epoch()
            if recipe.max_steps == 0 and known is None:
                raise RecipeError(
                    f"corpus {recipe.corpus!r} does not say how many pairs it has (no shards.json), so num_epochs "
                    "cannot be turned into steps; set max_steps."
                )
            self.steps_per_epoch = max(1, known or recipe.max_steps)
        else:
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
        # With streaming and num_epochs, an estimate (for the schedule and progress); the epochs decide the end.
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
        identity = self.run_identity()
        self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, optimizer, scheduler)
        self.ema = None
        if recipe.ema_decay is not None:
            from timm.utils import ModelEmaV3

            # timm's warm-up keeps the average short early on: at step t it decays by min(ema_decay, 1 - t ** -2/3).
            self.ema = ModelEmaV3(self._unwrapped(), decay=recipe.ema_decay, use_warmup=True)
        self.state = TrainerState(identity=identity)
        if recipe.resume_from_checkpoint is not None:
            self.resume(resolve_checkpoint(recipe.resume_from_checkpoint, self.output_dir / "checkpoints"))
        if reporters:
            accelerator.init_trackers("msa_hf", config=_flat_config(recipe))
        self._log_setup()

    def run_identity(self) -> dict[str, Any]:
        """What a checkpoint records and a resume must match: every recipe key that shapes the trained
        weights, the number of processes, the corpus fingerprint and the model's resolved config."""
        # Without streaming its keys shape nothing, and leaving them out keeps older checkpoints resumable.
        left_out = NOT_COMPARED if self.recipe.streaming else NOT_COMPARED | STREAMING_KEYS
        recipe = {key: value for key, value in dataclasses.asdict(self.recipe).items() if key not in left_out}
        identity = {
            **recipe,
            "num_processes": self.accelerator.num_processes,
            "corpus_fingerprint": corpus_fingerprint(self.corpus),
            **({"stream_fingerprint": self.stream_source.fingerprint()} if self.stream_source is not None else {}),
            "config": _portable(self.model.config.to_dict()),
        }
        return json.loads(json.dumps(identity, default=str))  # as the checkpoint will read back (tuples as lists)

    def resume(self, checkpoint: Path) -> None:
        """Load ``checkpoint`` after checking it comes from this recipe; every failure is one line naming the file."""
        saved = TrainerState.load(checkpoint)
        changes = identity_changes(saved.identity, self.state.identity) if saved.identity else []
        if not saved.identity:
            logger.warning("%s records no recipe (an older save); the resume cannot check it matches.", checkpoint)
        elif changes and not self.recipe.resume_allow_changes:
            raise CheckpointError(
                f"{checkpoint} was written by a different run setup ({'; '.join(changes)}), so resuming would not be "
                "exact. Resume with the recipe it was written with, or set resume_allow_changes=true to continue anyway."
            )
        elif changes:
            logger.warning("Resuming %s with changes (resume_allow_changes=true): %s.", checkpoint, "; ".join(changes))
        self._check_random_states(checkpoint)
        try:
            self.accelerator.load_state(str(checkpoint))
        except Exception as error:  # safetensors, torch.load and load_state_dict each raise their own kind
            reason = _short_reason(error)
            raise CheckpointError(
                f"{checkpoint} cannot be loaded into this run ({reason}); resume from "
                "another checkpoint or with the recipe it was written with."
            ) from None
        if self.ema is not None and not load_ema_weights(checkpoint, self.ema.module):
            # Only reachable with resume_allow_changes (ema_decay is part of the run's identity).
            logger.warning("%s holds no averaged weights; the average starts from the resumed weights.", checkpoint)
            self.ema.set(self._unwrapped())
        identity = self.state.identity
        self.state = saved
        self.state.identity = identity
        if saved.stream_positions:
            self.stream_position = saved.stream_positions[self.accelerator.process_index]
        if self.is_main:  # evaluations after the checkpoint (a crash after them) are done again
            rewrite_jsonl(self.output_dir / "metrics.jsonl", self.state.evaluations)
        logger.info("Resumed from %s (epoch %d, step %d)", checkpoint, self.state.epoch, self.state.global_step)

    def _check_random_states(self, checkpoint: Path) -> None:
        """Refuse a checkpoint whose RNG states for this process are missing or unreadable.

        Accelerate only logs such a file at INFO level and goes on with other RNG states, so the
        resumed run would silently differ from an uninterrupted one.
        """
        from accelerate.utils import load

        path = checkpoint / f"random_states_{self.accelerator.process_index}.pkl"
        try:
            load(path)
        except Exception as error:  # missing, truncated, or a pickle of more than tensors
            raise CheckpointError(
                f"{path} cannot be read ({_short_reason(error)}), so the resume would not be exact; resume from "
                "another checkpoint (resume_from_checkpoint=latest skips damaged ones)."
            ) from None

    def _log_setup(self) -> None:
        if not self.is_main:
            return
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        if self.stream is not None:
            logger.info(
                "Training %s on %s, streamed from %d shards (shuffle blocks of %d pairs): %d steps of %d × %d "
                "process(es); %.1f M of %.1f M parameters train.",
                self.recipe.model,
                self.corpus_name,
                len(self.stream_source.files["train"]),
                self.recipe.shuffle_buffer,
                self.total_steps,
                self.recipe.per_device_batch_size,
                self.accelerator.num_processes,
                trainable / 1e6,
                total / 1e6,
            )
            return
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

    def _selected_weights(self) -> MSAModel:
        """What validation scores and ``best/`` holds: the moving average with ``ema_decay``, else the weights."""
        return self.ema.module if self.ema is not None else self._unwrapped()

    def evaluate(self, split: str, model: MSAModel | None = None) -> EvaluationResult:
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
        origin = self.origin
        return build_model_card(
            self._unwrapped().config,
            model_name=self.recipe.hub_repo_id or model_display_name(*origin.title_towers, self.corpus_name),
            evaluations=[Evaluation(self.corpus_name, split, metrics) for split, metrics in evaluations],
            base_models=origin.base_models,
            vision_tower=origin.vision_tower,
            text_tower=origin.text_tower,
            recipe=self.recipe.to_yaml(),
            command=self.command,
            status=status,
            repo_id=self.recipe.hub_repo_id,
        )

    def save_best(self, metrics: dict[str, float]) -> None:
        best_dir = self.output_dir / "best"
        with _disk_errors(best_dir, "the previous best/ and the checkpoints"), atomic_directory(best_dir) as staging:
            self._selected_weights().save_pretrained(staging)
            self.processor.save_pretrained(staging)
            (staging / RECIPE_FILE).write_text(self.recipe.to_yaml())
            atomic_write_json(
                staging / METRICS_FILE,
                {
                    "validation": metrics,
                    "step": self.state.global_step,
                    "epoch": self._epoch_position(),
                    CORPUS_KEY: self.corpus_name,
                },
            )
            status = f"trained with msa_hf_train; selected by validation mR at epoch {self._epoch_position():.2f}"
            self._card([("validation", metrics)], status).save(staging / "README.md")

    def _epoch_position(self) -> float:
        return round(self.state.global_step / self.steps_per_epoch, 4)

    def run_evaluation(self) -> None:
        problem = ""
        if self.is_main:
            try:
                result = self.evaluate("validation", self._selected_weights())
            except ValueError as error:  # evaluate_corpus refuses a non-finite embedding
                if "non-finite" not in str(error):
                    raise
                problem = str(error)
            if not problem and not torch.isfinite(torch.as_tensor(result.text_embeds)).all():
                problem = "non-finite caption embeddings"
            without_ema = self._score_without_ema() if self.ema is not None and not problem else None
        if self._any_process(bool(problem)):
            raise TrainingDiverged(
                f"Validation at step {self.state.global_step} failed ({problem or 'on the main process'}): the model's "
                f"outputs are no longer finite, so nothing of this step was saved; "
                f"{self._last_good(before=self.state.global_step)} Lower learning_rate, set max_grad_norm, or turn "
                "mixed_precision off."
            )
        if self.is_main:
            metrics = result.metrics
            record = {
                "step": self.state.global_step,
                "epoch": self._epoch_position(),
                "split": "validation",
                "metrics": metrics,
                "metrics_by_tie_rule": _other_tie_rules(result),
            }
            if without_ema is not None:
                record["metrics_without_ema"] = without_ema.metrics
                record["metrics_without_ema_by_tie_rule"] = _other_tie_rules(without_ema)
            self.state.evaluations.append(record)
            append_jsonl(self.output_dir / "metrics.jsonl", record)
            self.accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=self.state.global_step)
            if without_ema is not None:
                self.accelerator.log(
                    {f"validation_without_ema/{k}": v for k, v in without_ema.metrics.items()},
                    step=self.state.global_step,
                )
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

    def _score_without_ema(self) -> EvaluationResult:
        """Validation of the weights themselves beside their average, so a run shows what the average gave.

        Under a forked RNG: evaluating draws from it (a DataLoader's seed), and this extra
        evaluation must not change the training that follows.
        """
        cuda = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return self.evaluate("validation")

    def save(self) -> Path:
        """A checkpoint of the current step; weights that are not finite are never saved."""
        model = self._unwrapped()
        weights_bad = any(not torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
        if self._any_process(weights_bad):
            raise TrainingDiverged(
                f"The weights became non-finite at step {self.state.global_step} (epoch {self.state.epoch}) and were "
                f"not saved; {self._last_good(before=self.state.global_step)} Lower learning_rate, set "
                "max_grad_norm, or turn mixed_precision off."
            )
        if self.stream is not None:  # every process's place in the stream, for an exact resume
            from accelerate.utils import gather_object

            self.state.stream_positions = gather_object([self.stream_position])
        checkpoints = self.output_dir / "checkpoints"
        with _disk_errors(checkpoints / checkpoint_name(self.state.global_step), "the previous checkpoints"):
            ema_model = self.ema.module if self.ema is not None else None
            return save_checkpoint(self.accelerator, checkpoints, self.state, self.recipe.keep_last, ema_model)

    def _last_good(self, before: int) -> str:
        """The sentence naming the newest checkpoint before step ``before`` with finite weights and validation."""
        bad_steps = {e["step"] for e in self.state.evaluations if not all(map(math.isfinite, e["metrics"].values()))}
        for checkpoint in reversed(list_checkpoints(self.output_dir / "checkpoints")):
            step = int(checkpoint.name.removeprefix("step-"))
            if step >= before or step in bad_steps:
                continue
            try:
                weights = load_file(checkpoint / "model.safetensors")
            except (OSError, SafetensorError):
                continue
            if all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
                return (
                    f"the last good checkpoint is {checkpoint} (resume_from_checkpoint={checkpoint}, with "
                    "resume_allow_changes=true to change the recipe)."
                )
        return "no checkpoint before it has finite weights (start over with overwrite_output_dir=true)."

    # --- training
    def _any_process(self, flag: bool) -> bool:
        return processes_any(self.accelerator, [flag])[0]

    def _epoch_batches(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """The rest of this epoch's micro-batches, each with whether it is the epoch's last."""
        state, last = self.state, self.steps_per_epoch * self.recipe.gradient_accumulation_steps
        if self.stream is None:
            self.sampler.start(state.epoch, skip=state.batches_done)
            for batch in self.loader:
                if state.batches_done >= last:
                    break  # the leftover micro-batches that cannot fill an accumulation cycle
                yield batch, state.batches_done + 1 >= last
            return
        batches = self.stream.epoch(state.epoch, self.stream_position)
        current = next(batches, None)
        if processes_any(self.accelerator, [current is None])[0] and state.batches_done == 0:
            raise RecipeError(
                f"The training stream of {self.recipe.corpus!r} gives a process no full batch of "
                f"{self.recipe.per_device_batch_size} pairs in epoch {state.epoch}; lower per_device_batch_size."
            )
        while True:
            following = next(batches, None) if current is not None else None  # one ahead: is this the last?
            ended, last_one, bad = processes_any(
                self.accelerator, [current is None, following is None, self.stream.problem is not None]
            )
            if bad:
                raise TooManyBadImages(self.stream.problem or "another process met too many undecodable images.")
            if ended:  # a process's share ran out: the epoch ends for all, so batches stay full and gathered
                return
            batch, self.stream_position = current
            yield batch, last_one
            current = following

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One micro-batch; returns the loss terms (the optimizer steps once per accumulation cycle)."""
        accelerator = self.accelerator
        with accelerator.accumulate(self.model):
            out = self.model(**model_inputs(batch, accelerator.device), return_loss=True)
            terms = loss_record(out)
            if self._any_process(not math.isfinite(terms["loss"])):
                # On finite inputs the weights gave the non-finite loss, so a checkpoint of them is not good.
                weights_to_blame = not self._any_process(not _finite_batch(batch))
                raise TrainingDiverged(
                    f"The loss became non-finite at step {self.state.global_step + 1} (epoch {self.state.epoch}): "
                    f"{terms}. Nothing was updated; {self._last_good(before=self.state.global_step + 1 - weights_to_blame)}"
                    " Lower learning_rate, set max_grad_norm, or turn mixed_precision off."
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
            while not self._finished(state.global_step, state.epoch):
                micro: list[dict[str, float]] = []
                for batch, last_of_epoch in self._epoch_batches():
                    micro.append(self.train_step(batch))
                    state.batches_done += 1
                    if len(micro) < accum:
                        continue
                    state.global_step += 1
                    if self.ema is not None:
                        self.ema.update(self._unwrapped(), step=state.global_step)
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
                    end_of_epoch = last_of_epoch
                    finished = self._finished(state.global_step, state.epoch + end_of_epoch)
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
            if self.stream is not None and (line := self.stream.report()):
                logger.warning(line)

    def _finished(self, step: int, epochs_done: int) -> bool:
        """``max_steps`` reached, else ``num_epochs`` done (a stream's epochs end where the stream does)."""
        return step >= self.recipe.max_steps if self.recipe.max_steps > 0 else epochs_done >= self.recipe.num_epochs

    # --- the end
    def test(self) -> TrainingResult:
        best_dir = self.output_dir / "best"
        test_metrics: dict[str, float] = {}
        expected_ties: dict[str, float] = {}
        argsort_ties: dict[str, float] = {}
        if self.is_main:
            model = MSAModel.from_pretrained(str(best_dir)).to(self.accelerator.device)
            self._set_memory_format(model)
            result = self.evaluate("test", model)
            test_metrics = result.metrics
            other_rules = _other_tie_rules(result)
            expected_ties, argsort_ties = other_rules["expected"], other_rules["argsort"]
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
            atomic_write_json(
                self.output_dir / FINISHED_MARKER,
                {
                    "test": test_metrics,
                    "test_expected_ties": expected_ties,
                    "test_argsort_ties": argsort_ties,
                    "best_step": self.state.best_step,
                    "best_epoch": self.state.best_epoch,
                    CORPUS_KEY: self.corpus_name,
                    "command": self.command,
                },
            )
            best = self.state.evaluations[[e["step"] for e in self.state.evaluations].index(self.state.best_step)]
            status = (
                f"trained with msa_hf_train; selected by validation mR (epoch {self.state.best_epoch:.2f}); "
                "test evaluated once. The test figures rank tied scores in the published protocol's "
                f"np.argsort order; counting ties against the model, test mR is {test_metrics['mr']:.2f}, "
                f"and with tied items in random order {expected_ties['mr']:.2f}"
            )
            card = self._card([("validation", best["metrics"]), ("test", argsort_ties)], status)
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
            argsort_ties,
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
                    f"  ties:        test mR {result.test_metrics_argsort_ties['mr']:.2f} in the published protocol's "
                    f"argsort order, {result.test_metrics_expected_ties['mr']:.2f} with tied items in random order "
                    "(identical captions of different images; test_metrics.json)"
                ]
                if result.test_metrics_expected_ties.get("mr", result.test_metrics["mr"]) != result.test_metrics["mr"]
                or result.test_metrics_argsort_ties.get("mr", result.test_metrics["mr"]) != result.test_metrics["mr"]
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
    try:
        trainer.setup()
    except Exception:
        trainer.remove_empty_output_dir()
        raise
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
    "model_inputs",
    "prepare_output_dir",
    "train",
]
