"""Where a model comes from: a Hub id or a path, its resolution to a local folder, loading, identity.

Every command that takes a model (``msa-eval``, ``msa-index``, ``msa-classify``, ``msa-app``,
``msa-push``'s check, training) loads it through :func:`msa_hf.create_model_and_processor`,
which loads folders and Hub ids with :func:`load_pretrained` here, so a folder and a Hub id at a
revision are told apart, downloaded, cached (offline: read from the cache) and loaded the same
way everywhere, and an index names its model by the same fingerprint.

This module sits below :mod:`msa_hf.hub` (pushing), :mod:`msa_hf.model_card` and
:mod:`msa_hf.retrieval`: it imports none of them. It is light to import (no torch, no
huggingface_hub until a function needs them), so commands answer ``--help`` at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_utils import UsageError, existing_path

if TYPE_CHECKING:
    import torch

# What a model folder needs on the Hub: config/processor/tokenizer JSON, weights, the model's
# code, vocabularies, the card and the training recipe (not logs or checkpoints beside them).
MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.txt", "*.model", "*.md", "*.yaml"]
# Names with these endings are data files, never Hub ids (a corpus JSON, a metadata table).
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv")


class HubError(RuntimeError):
    """The Hub could not be reached, or refused or failed a request (exit code 1)."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def offline_setting() -> str:
    """The variable that put huggingface_hub offline, as ``NAME=value``, so a message names what the user set.

    huggingface_hub reads ``HF_HUB_OFFLINE`` and, failing that, ``TRANSFORMERS_OFFLINE``.
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return "HF_HUB_OFFLINE=1"


def describe_hub_error(error: BaseException, action: str) -> str:
    """One line saying which kind of Hub failure ``error`` is (network, token, 4xx, 5xx) and why."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(error, HubError):
        return str(error)
    endpoint = constants.ENDPOINT
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    server = _one_line(getattr(error, "server_message", None) or "") or _one_line(str(error).split("\n")[0])
    if isinstance(error, OfflineModeIsEnabled):
        return f"cannot {action}: {offline_setting()} is set and this needs the network; unset it to go online."
    if status in (401, 403):
        return (
            f"the Hub refused to {action} (HTTP {status}, bad or missing token: {server}); log in with "
            f"`hf auth login` or set HF_TOKEN to a token with access to the repo (write access to push)."
        )
    if isinstance(status, int) and 400 <= status < 500:
        return f"the Hub rejected the request to {action} (HTTP {status}: {server})."
    if isinstance(status, int) and status >= 500:
        return f"the Hub failed to {action} (HTTP {status}, a server-side error: {server}); try again later."
    root, seen = error, {id(error)}
    while (cause := root.__cause__ or root.__context__) is not None and id(cause) not in seen:
        root = cause
        seen.add(id(root))
    transport = type(root).__module__.split(".")[0] in {"httpx", "httpx2", "requests", "urllib3", "socket"}
    if transport or isinstance(root, (ConnectionError, TimeoutError)):
        return (
            f"could not reach the Hub at {endpoint} to {action} (no network? check the connection, "
            f"proxy or HF_ENDPOINT): {type(root).__name__}: {_one_line(str(root))}"
        )
    return f"could not {action}: {type(error).__name__}: {_one_line(str(error))}"


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is written as a filesystem path (``./x``, ``/x``, ``~/x``, ``C:\\x``, ``x.json``), never a Hub id.

    ```python
    >>> looks_like_path("./outputs/best"), looks_like_path("data/dataset_ucm.json"), looks_like_path("user/rsicd")
    (True, True, False)
    ```
    """
    return name.startswith((".", "/", "~")) or "\\" in name or Path(name).suffix.lower() in DATA_FILE_SUFFIXES


def path_or_hub_id(expected: str) -> Callable[[str], str]:
    """An argparse ``type`` for a local path or a Hub id: a value written as a path must exist.

    It answers at parse time, before a command imports torch; anything `looks_like_path` does
    not claim may be a Hub id and is left to the loader.
    """
    must_exist = existing_path(expected)

    def parse(value: str) -> str:
        return must_exist(value) if looks_like_path(value) else value

    return parse


def is_hub_id(name: str, *, with_owner: bool = False) -> bool:
    """Whether ``name`` reads as a Hub model id rather than a filesystem path.

    ``with_owner`` accepts only ``owner/name``: ids without an owner (``bert-base-uncased``)
    belong to a few legacy models, never to a repo made today such as an MSA model, and a bare
    name is more likely a mistyped preset.

    ```python
    >>> is_hub_id("user/msa-rsicd"), is_hub_id("./outputs/best"), is_hub_id("/abs/path")
    (True, False, False)
    >>> is_hub_id("bert-base-uncased"), is_hub_id("bert-base-uncased", with_owner=True)
    (True, False)
    ```
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not name or looks_like_path(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name or not with_owner


def resolve_model_source(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """A local folder holding the model ``name_or_path`` names: the folder itself, or a Hub snapshot.

    A Hub id is fetched at ``revision`` (branch, tag or commit; default ``main``) into the
    Hugging Face cache (``HF_HUB_CACHE``), model files only, and the snapshot folder is
    returned; model and processor then come from the same commit. With ``HF_HUB_OFFLINE=1``,
    or when the Hub cannot be reached, the cached snapshot is used.

    Raises:
        UsageError: ``revision`` given with a local folder, or a name that is neither an
            existing path nor a Hub id.
        HubError: the id is not cached and cannot be downloaded (offline, unreachable,
            unknown repo or revision, no access), in one line.

    ```python
    >>> resolve_model_source("user/msa-rsicd", revision="v1.0")  # doctest: +SKIP
    '/home/me/.cache/huggingface/hub/models--user--msa-rsicd/snapshots/4f1c…'
    ```
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        if revision is not None:
            raise UsageError(f"--revision {revision!r} applies to Hub ids, but {name!r} is a local folder.")
        return str(local)
    if not is_hub_id(name):
        raise UsageError(f"{name!r} is neither an existing folder nor a Hub id ('user/name'): check the path.")
    at = f"{name}@{revision or 'main'}"
    parent = Path(name).parent
    # "outputs/best" reads as a Hub id too: when "outputs" is a local folder, say it was tried as a path.
    not_local = f" (there is no local folder {name!r} either)" if str(parent) != "." and parent.is_dir() else ""
    try:
        return snapshot_download(name, revision=revision, allow_patterns=MODEL_FILE_PATTERNS)
    except LocalEntryNotFoundError as error:  # not cached, and offline or unreachable
        if constants.HF_HUB_OFFLINE:
            raise HubError(
                f"{at} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {offline_setting()} "
                f"forbids downloading it: run once online, or pass a local folder{not_local}."
            ) from error
        reason = describe_hub_error(error.__cause__ or error.__context__ or error, f"download {at}")
        raise HubError(f"{at} is not in the local Hugging Face cache, and {reason}{not_local}") from error
    except Exception as error:  # unknown repo or revision, no access, server errors
        raise HubError(describe_hub_error(error, f"download {at}") + not_local) from error


class ModelLoadError(ValueError):
    """The given folder or Hub snapshot holds no loadable MSA model and processor (bad input:
    exit code 2); a Hub that cannot be reached raises :class:`HubError` instead."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CUDA when available, else CPU; strings are validated with a clear error."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` {device!r} is not a torch device (try 'cpu', 'cuda', 'cuda:0').") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {device!r} asks for CUDA but torch.cuda.is_available() is False.")
    return dev


def load_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    config_update: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any]:
    """Load an ``MSAModel`` (eval mode, CPU) and its ``MSAProcessor`` from a folder or Hub id.

    A Hub id is fetched at ``revision`` through the Hugging Face cache (offline: from it) by
    :func:`resolve_model_source`, and the model's ``name_or_path`` is the Hub id.
    ``config_update`` maps the saved config to the one to build (e.g. with overrides merged in).
    Errors from deep inside transformers are re-raised as :class:`ModelLoadError` naming the
    folder/id and what was expected there (``config.json`` + weights + processor files);
    :class:`HubError` means the Hub could not be reached or refused the request.
    """
    from .configuration_msa import MSAConfig
    from .modeling_msa import MSAModel
    from .processing_msa import MSAProcessor

    source = str(name_or_path)
    if not source:
        raise ModelLoadError("No model given: pass --model with a saved MSA folder or a Hub id.")
    local = Path(resolve_model_source(source, revision))  # HubError (exit 1) when the Hub fails
    if not (local / "config.json").is_file():
        raise ModelLoadError(
            f"Model {source} has no config.json: expected a folder written by "
            f"MSAModel.save_pretrained (and MSAProcessor.save_pretrained)."
        )
    config = {} if config_update is None else {"config": config_update(MSAConfig.from_pretrained(local))}
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in a CLI
    try:
        model = MSAModel.from_pretrained(local, **config)
    except ValueError as exc:  # not an MSA folder, or a checkpoint that does not fill the model: one line
        raise ModelLoadError(str(exc)) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"Could not load an MSA model from {source!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    try:
        processor = MSAProcessor.from_pretrained(local)
    except Exception as exc:
        raise ModelLoadError(
            f"Loaded the model from {source!r} but not its processor ({type(exc).__name__}: {exc}); "
            f"save it next to the model with MSAProcessor.save_pretrained."
        ) from exc
    if str(local) != source and not Path(source).expanduser().exists():  # a Hub snapshot: snapshots/<commit>
        model.name_or_path = model.config.name_or_path = source  # record the Hub id, not the cache path
        model.config._commit_hash = local.name
    return model, processor


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Identity of a model for index manifests: where it came from and exactly which weights.

    * ``name_or_path``: ``model.name_or_path``, the Hub id or the folder it was loaded from
      (made absolute); empty for a model built in memory.
    * ``revision``: the Hub commit (``config._commit_hash``) when the model came from the Hub,
      else ``None``.
    * ``weights_sha256``: SHA-256 over the state dict (sorted names, dtypes, shapes and raw
      bytes). This is the authoritative identity: it does not depend on the path, on
      sharding or on the file format, and it changes whenever any weight changes (including
      a dtype change, which also changes the embeddings). Hashing costs about a second per
      500 MB of weights.
    """
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    config = getattr(model, "config", None)
    name = str(getattr(model, "name_or_path", "") or "")
    if name and Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())  # a relative folder would break from another cwd
    return {
        "name_or_path": name,
        "revision": getattr(config, "_commit_hash", None) if config is not None else None,
        "weights_sha256": digest.hexdigest(),
        "model_class": type(model).__name__,
    }


def processor_fingerprint(processor: Any) -> str | None:
    """SHA-256 of the image processor's settings (resize and normalisation change embeddings)."""
    image_processor = getattr(processor, "image_processor", processor)
    to_dict = getattr(image_processor, "to_dict", None)
    if to_dict is None:
        return None
    settings = {k: v for k, v in to_dict().items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


__all__ = [
    "DATA_FILE_SUFFIXES",
    "MODEL_FILE_PATTERNS",
    "HubError",
    "ModelLoadError",
    "describe_hub_error",
    "is_hub_id",
    "load_pretrained",
    "looks_like_path",
    "model_fingerprint",
    "offline_setting",
    "processor_fingerprint",
    "path_or_hub_id",
    "resolve_device",
    "resolve_model_source",
]
