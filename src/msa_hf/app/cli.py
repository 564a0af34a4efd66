"""``msa-app``: the command line of the search app (also what ``app.py`` runs on a Space).

Settings come from flags, else from the environment, so a Space configures the app with
variables: ``MSA_APP_MODEL``, ``MSA_APP_INDEX``, ``MSA_APP_IMAGES``, and Gradio's own
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` for the address.

The app starts even when the index is missing or stale or does not match the model: the page
says what is wrong and how to fix it (the same lines are printed here as warnings), and its
*Reload index* button picks up a rebuilt index without a restart.
"""

from __future__ import annotations

import argparse
import os
import socket
import warnings
from collections.abc import Sequence

from msa_hf.cli_utils import EXIT_OK, UsageError, positive_int, run_command
from msa_hf.retrieval.cli import add_search_options
from msa_hf.sources import path_or_hub_id

__all__ = ["ENV_IMAGES", "ENV_INDEX", "ENV_MODEL", "build_parser", "main", "set_threads"]

ENV_MODEL = "MSA_APP_MODEL"
ENV_INDEX = "MSA_APP_INDEX"
ENV_IMAGES = "MSA_APP_IMAGES"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be from 1 to 65535, got {port}")
    return port


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch and, when installed, FAISS."""
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(threads)


def _check_port_free(host: str, port: int) -> None:
    """Fail before loading anything if the address cannot be served (busy port, unknown host)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(
                f"cannot serve on {host}:{port} ({exc.strerror or exc}); choose another --port or --host."
            ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``msa-app`` argument parser; defaults are read from the environment when it is built."""
    env = os.environ
    p = argparse.ArgumentParser(
        prog="msa-app",
        description="Search an image archive in the browser: text -> images, image -> images and captions, "
        "zero-shot classification. Serves on localhost; no share links, no analytics.",
    )
    p.add_argument(
        "--model",
        default=env.get(ENV_MODEL),
        type=path_or_hub_id("a folder written by save_pretrained (model + processor), a Hub id or a preset"),
        help=f"saved MSA folder, Hub id or preset (env {ENV_MODEL})",
    )
    p.add_argument("--index", default=env.get(ENV_INDEX), help=f"index folder from `msa-index build` (env {ENV_INDEX})")
    p.add_argument(
        "--images",
        default=env.get(ENV_IMAGES),
        help=f"image folder, if it moved since the index was built (env {ENV_IMAGES})",
    )
    p.add_argument(
        "--host",
        default=env.get("GRADIO_SERVER_NAME", DEFAULT_HOST),
        help=f"address to serve on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--port", type=_port, default=env.get("GRADIO_SERVER_PORT", DEFAULT_PORT), help="port (default 7860)"
    )
    add_search_options(p)
    p.add_argument("--device", default=None, help="torch device for the model (default: cuda if available, else cpu)")
    p.add_argument(
        "--threads",
        type=positive_int("--threads"),
        default=None,
        help="CPU threads for encoding and search (default: torch's, one per core); 1 keeps queries fast on a "
        "machine that other busy jobs share",
    )
    return p


def _serve(args: argparse.Namespace) -> int:
    if not args.model:
        raise UsageError(f"--model is required (a saved MSA folder, Hub id or preset), or set {ENV_MODEL}.")
    if not args.index:
        raise UsageError(f"--index is required (a folder written by `msa-index build`), or set {ENV_INDEX}.")
    _check_port_free(args.host, args.port)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ImportError(f'msa-app needs gradio: pip install "msa_hf[app]" ({exc}).') from exc
    from .service import SearchService
    from .ui import build_demo, launch

    if args.threads:
        set_threads(args.threads)

    service = SearchService.open(
        args.model,
        args.index,
        images=args.images,
        backend=args.backend,
        device=args.device,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
    )
    status = service.status()
    for key in ("model_error", "index_error", "mismatch_error", "stale_error"):
        if status[key]:
            warnings.warn(status[key], stacklevel=1)
    if status["stale"]:
        warnings.warn(f"{status['index']}: {status['stale_summary']}", stacklevel=1)
    if status["num_images"] is not None:
        print(f"msa-app: {status['num_images']:,} images, {status['embedding_dim']}-d, model {status['model']}")
    with warnings.catch_warnings():
        # While serving, warnings come from the web stack (event loops, pandas deprecations in Gradio),
        # not from anything the user can act on.
        for category in (ResourceWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        launch(build_demo(service), service, args.host, args.port)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``msa-app --model M --index INDEX [--host H] [--port P]``: serve the search app until interrupted."""
    return run_command("msa-app", _serve, build_parser(), argv)
