"""The Gradio page of the search app: three tabs over one :class:`~msa_hf.app.service.SearchService`.

:class:`SearchPage` holds the event handlers as plain methods that take and return plain
values (strings, lists, data frames), so tests call them directly without a browser. Every
handler turns any failure into a message in the page: an :class:`~msa_hf.app.service.AppError`
as it is, anything unexpected as one line (logged with its traceback on the server), so a
bad request never breaks the page and the app keeps serving.

Element ids (``#text-query``, ``#text-gallery``, ``#text-message``, ``#status``, ...) are part
of the page's contract: the browser test and the screenshot script find elements by them.
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from msa_hf.retrieval import SearchHit, load_image
from msa_hf.retrieval.classify import DEFAULT_TEMPLATE

from .service import ARCHIVE_CHOICES_LIMIT, MAX_K, AppError, SearchService, parse_lines

__all__ = ["EXAMPLE_QUERIES", "SearchPage", "build_demo", "format_status", "hit_caption", "launch"]

logger = logging.getLogger("msa_hf.app")

EXAMPLE_QUERIES = [
    "two planes parked beside a runway",
    "many cars in a parking lot",
    "a river crosses green farmland",
    "ships in a harbour",
    "dense residential buildings",
]
DEFAULT_LABELS = "airport, farmland, harbor, dense residential, forest, river"
DEFAULT_K = 8
# Formats every browser shows; other archive formats (TIFF, JPEG 2000, ...) are sent as thumbnails.
WEB_FORMATS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
THUMBNAIL_SIDE = 512


def hit_caption(hit: SearchHit) -> str:
    """The caption under a result image: rank, cosine score and file name.

    Example:

    ```python
    >>> from msa_hf.retrieval import SearchHit
    >>> hit_caption(SearchHit(rank=1, score=0.4321, path="/a/airport_01.tif", relpath="airport_01.tif", row=0))
    '#1 · 0.432 · airport_01.tif'
    ```
    """
    return f"#{hit.rank} · {hit.score:.3f} · {hit.relpath}"


def display_path(path: str | None) -> str | None:
    """``path`` relative to the working directory when it lies there or one folder up, else as given.

    The status line is read on screen and in screenshots: a path from where the app was started
    says what it needs to, and no machine's directory layout leaks into a picture.
    """
    if not path:
        return path
    relative = os.path.relpath(path)
    return relative if not relative.startswith(os.path.join(os.pardir, os.pardir)) else path


def format_status(status: dict[str, Any]) -> str:
    """The status line (Markdown): model, index size and dimension, staleness, last search time."""
    status = {**status, **{key: display_path(status[key]) for key in ("index", "image_root") if status.get(key)}}
    parts = [f"**Model** `{status['model']}`"]
    if status["num_images"] is not None:
        parts.append(
            f"**Index** `{status['index']}`: {status['num_images']:,} images, {status['embedding_dim']}-d embeddings"
        )
    if status["stale"] is True:
        counts = status["stale_counts"]
        parts.append(
            f"⚠ **stale**: {counts['added']} new, {counts['removed']} removed, {counts['modified']} modified "
            f"image files since it was built (`msa-index status {status['index']}`); rebuild it with "
            f"`msa-index build {status['image_root']} --model {status['model']} --out {status['index']}` "
            f"and press “Reload index”"
        )
    elif status["stale"] is False:
        parts.append(f"up to date with `{status['image_root']}`")
    ms = status["last_search_ms"]
    parts.append(f"**Last search** {ms:.1f} ms ({status['backend']})" if ms is not None else "**Last search** –")
    line = " · ".join(parts)
    problems = [status[k] for k in ("model_error", "index_error", "mismatch_error", "stale_error") if status.get(k)]
    return line + "".join(f"\n\n{_warning(p)}" for p in problems)


def _warning(text: str) -> str:
    return f"⚠ {text}"


def _display_image(path: str) -> str | Image.Image:
    """A path the browser can show as is, or a decoded thumbnail for formats it cannot (GeoTIFF, ...)."""
    if Path(path).suffix.lower() in WEB_FORMATS:
        return path
    image = load_image(path).convert("RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return image


def _missing_note(missing: Sequence[SearchHit]) -> str:
    if not missing:
        return ""
    names = ", ".join(f"`{h.relpath}`" for h in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return (
        f"Note: {len(missing)} result(s) cannot be read from disk ({names}{more}): the index is stale; "
        f"rebuild it with `msa-index build`."
    )


class SearchPage:
    """Event handlers of the page; each returns values for its outputs and never raises."""

    def __init__(self, service: SearchService) -> None:
        self.service = service

    # ------------------------------------------------------------------ helpers
    def status_markdown(self) -> str:
        return format_status(self.service.status())

    def _message(self, error: Exception) -> str:
        if isinstance(error, AppError):
            return _warning(str(error))
        logger.exception("search app handler failed")
        return _warning(
            f"Something went wrong ({type(error).__name__}: {error}). The app is still running; "
            f"the server log has the details."
        )

    def _gallery(
        self, hits: Sequence[SearchHit]
    ) -> tuple[list[tuple[Any, str]], list[dict[str, Any]], list[SearchHit]]:
        """Gallery items and hit dicts for the hits that can be shown, and the hits that cannot."""
        items, kept, unreadable = [], [], []
        for hit in hits:
            try:
                items.append((_display_image(hit.path), hit_caption(hit)))
            except (OSError, ValueError):  # unreadable since the build: reported like a missing file
                unreadable.append(hit)
                continue
            kept.append(hit.to_dict())
        return items, kept, unreadable

    # ------------------------------------------------------------------ text -> images
    def text_search(self, query: str, k: Any) -> tuple[list, list[dict[str, Any]], str, str]:
        """Outputs: gallery items, hits (state), message, status."""
        try:
            present, missing = self.service.search_text(query, k)
            items, hits, unreadable = self._gallery(present)
            message = _missing_note(missing + unreadable)
        except Exception as exc:
            items, hits, message = [], [], self._message(exc)
        return items, hits, message, self.status_markdown()

    def show_hit(self, hits: Sequence[dict[str, Any]], position: int | None) -> tuple[Any, str, str]:
        """Outputs for a clicked result: the image large, its full path, and its rank and score."""
        if position is None or not 0 <= position < len(hits):
            return None, "", ""
        hit = hits[position]
        try:
            image: Any = _display_image(hit["path"])
        except (OSError, ValueError) as exc:
            return None, hit["path"], _warning(f"{hit['path']} cannot be shown: {exc}")
        return image, hit["path"], f"Rank {hit['rank']} · cosine {hit['score']:.4f} · `{hit['relpath']}`"

    # ------------------------------------------------------------------ image -> images and captions
    def image_search(
        self, upload: str | None, archive_file: str | None, k: Any, captions_text: str
    ) -> tuple[Any, list, list[dict[str, Any]], pd.DataFrame, str, str]:
        """Outputs: query image, gallery items, hits (state), caption table, message, status."""
        table = pd.DataFrame(columns=["rank", "cosine", "caption"])
        try:
            result = self.service.search_image(upload, archive_file, k, parse_lines(captions_text))
            items, hits, unreadable = self._gallery(result.hits)
            message = _missing_note(result.missing + unreadable)
            table = pd.DataFrame(
                [(c.rank, round(c.score, 4), c.caption) for c in result.captions], columns=table.columns
            )
            query: Any = result.query_image
        except Exception as exc:
            query, items, hits, message = None, [], [], self._message(exc)
        return query, items, hits, table, message, self.status_markdown()

    # ------------------------------------------------------------------ zero-shot classification
    def classify(
        self, upload: str | None, archive_file: str | None, labels_text: str, template: str
    ) -> tuple[Any, pd.DataFrame, str, str]:
        """Outputs: the image, a (label, probability) frame for the bar chart, message, status."""
        frame = pd.DataFrame(columns=["label", "probability"])
        try:
            image, probs = self.service.classify(upload, archive_file, parse_lines(labels_text, commas=True), template)
            frame = pd.DataFrame(list(probs.items()), columns=frame.columns)
            best = next(iter(probs))
            message = f"Most likely: **{best}** ({probs[best]:.1%})"
        except Exception as exc:
            image, message = None, self._message(exc)
        return image, frame, message, self.status_markdown()

    # ------------------------------------------------------------------ index
    def archive_choices(self) -> list[str]:
        files = self.service.archive_files
        return files if len(files) <= ARCHIVE_CHOICES_LIMIT else []

    def reload(self) -> str:
        """Reload the index from disk (after a rebuild); outputs: status."""
        try:
            self.service.reload_index()
        except Exception as exc:
            return self.status_markdown() + "\n\n" + self._message(exc)
        return self.status_markdown()


def _archive_picker(page: SearchPage, elem_id: str) -> Any:
    import gradio as gr

    many = len(page.service.archive_files) > ARCHIVE_CHOICES_LIMIT
    return gr.Dropdown(
        choices=page.archive_choices(),
        value=None,
        allow_custom_value=True,
        filterable=True,
        label="…or pick an archive image",
        info="type a path relative to the image folder" if many else "type to filter",
        elem_id=elem_id,
    )


def build_demo(service: SearchService, title: str = "MSA image search") -> Any:
    """The Gradio ``Blocks`` of the app (launch it with :func:`msa_hf.app.launch`)."""
    import gradio as gr

    page = SearchPage(service)
    # Result images are copied into Gradio's cache; an hourly sweep keeps it to the last hour's results.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"## {title}\nSearch an aerial image archive by description or by example, offline.")
        with gr.Row(equal_height=True):
            status = gr.Markdown(page.status_markdown(), elem_id="status")
            reload_button = gr.Button("Reload index", size="sm", scale=0, elem_id="reload")
        with gr.Tabs(selected="text") as tabs:
            with gr.Tab("Text → images", id="text"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        label="Describe the scenes",
                        placeholder=EXAMPLE_QUERIES[0],
                        scale=4,
                        elem_id="text-query",
                    )
                    text_k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Results", scale=1, elem_id="text-k")
                    text_button = gr.Button("Search", variant="primary", scale=0, elem_id="text-search")
                gr.Examples(EXAMPLE_QUERIES, inputs=[query], label="Examples")
                text_message = gr.Markdown(elem_id="text-message")
                text_gallery = gr.Gallery(
                    label="Top images (rank · cosine · file)",
                    columns=4,
                    height="auto",
                    allow_preview=False,
                    object_fit="cover",
                    elem_id="text-gallery",
                )
                text_hits = gr.State([])
                with gr.Row():
                    selected_image = gr.Image(label="Selected image", type="pil", height=420, elem_id="selected-image")
                    with gr.Column():
                        selected_path = gr.Textbox(label="Path", buttons=["copy"], elem_id="selected-path")
                        selected_info = gr.Markdown(elem_id="selected-info")
                        similar_button = gr.Button("Find similar images", elem_id="find-similar")
            with gr.Tab("Image → images and captions", id="image"):
                with gr.Row():
                    with gr.Column():
                        image_upload = gr.File(label="Upload an image (PNG, JPEG, TIFF, ...)", elem_id="image-upload")
                        image_archive = _archive_picker(page, "image-archive")
                        image_k = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1, label="Results", elem_id="image-k")
                        candidates = gr.Textbox(
                            label="Candidate captions to rank (optional, one per line)",
                            lines=4,
                            placeholder="two planes are parked beside the runway\nmany cars are parked in a lot",
                            elem_id="image-captions",
                        )
                        image_button = gr.Button("Search", variant="primary", elem_id="image-search")
                    image_query = gr.Image(label="Query image", type="pil", height=320, elem_id="image-query")
                image_message = gr.Markdown(elem_id="image-message")
                image_gallery = gr.Gallery(
                    label="Nearest archive images (rank · cosine · file)",
                    columns=4,
                    height="auto",
                    allow_preview=True,
                    object_fit="cover",
                    elem_id="image-gallery",
                )
                image_hits = gr.State([])
                caption_table = gr.Dataframe(
                    headers=["rank", "cosine", "caption"], label="Captions, best first", elem_id="caption-table"
                )
            with gr.Tab("Zero-shot classification", id="classify"):
                with gr.Row():
                    with gr.Column():
                        cls_upload = gr.File(label="Upload an image (PNG, JPEG, TIFF, ...)", elem_id="classify-upload")
                        cls_archive = _archive_picker(page, "classify-archive")
                        labels = gr.Textbox(
                            DEFAULT_LABELS, label="Labels (comma- or line-separated)", lines=2, elem_id="labels"
                        )
                        template = gr.Textbox(
                            DEFAULT_TEMPLATE, label="Prompt template ({} is the label)", elem_id="template"
                        )
                        cls_button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                    cls_image = gr.Image(label="Image", type="pil", height=320, elem_id="classify-image")
                cls_message = gr.Markdown(elem_id="classify-message")
                cls_plot = gr.BarPlot(
                    x="label", y="probability", y_lim=[0, 1], sort="-y", label="Probabilities", elem_id="classify-plot"
                )

        text_inputs = [query, text_k]
        text_outputs = [text_gallery, text_hits, text_message, status]
        text_button.click(page.text_search, text_inputs, text_outputs)
        query.submit(page.text_search, text_inputs, text_outputs)

        # No `from __future__ import annotations` in this module: Gradio finds the event argument by its annotation.
        def on_select(hits: list[dict[str, Any]], event: gr.SelectData) -> tuple[Any, str, str]:
            return page.show_hit(hits, event.index)

        text_gallery.select(on_select, [text_hits], [selected_image, selected_path, selected_info])

        image_outputs = [image_query, image_gallery, image_hits, caption_table, image_message, status]
        image_button.click(page.image_search, [image_upload, image_archive, image_k, candidates], image_outputs)

        def similar_to_selected(hits: list[dict[str, Any]], path: str) -> tuple[Any, Any, Any]:
            relpath = next((h["relpath"] for h in hits if h["path"] == path), None)
            return gr.Tabs(selected="image"), None, relpath

        similar_button.click(similar_to_selected, [text_hits, selected_path], [tabs, image_upload, image_archive]).then(
            page.image_search, [image_upload, image_archive, image_k, candidates], image_outputs
        )
        # One image source at a time: a new upload clears the archive pick and vice versa.
        for upload, archive in ((image_upload, image_archive), (cls_upload, cls_archive)):
            upload.upload(lambda: None, None, [archive])
            archive.input(lambda: None, None, [upload])

        cls_button.click(
            page.classify, [cls_upload, cls_archive, labels, template], [cls_image, cls_plot, cls_message, status]
        )

        def reload() -> tuple[str, Any, Any]:
            text = page.reload()
            choices = page.archive_choices()
            return text, gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

        reload_button.click(reload, None, [status, image_archive, cls_archive])
    return demo


def launch(demo: Any, service: SearchService, host: str, port: int, **kwargs: Any) -> None:
    """Serve the page on ``host:port`` with analytics and share links off (this is an offline tool).

    The image folder is the only place outside Gradio's own cache that the server may read files from.
    """
    import gradio as gr

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    allowed = [str(service.image_root.resolve())] if service.index is not None else []
    demo.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=allowed,
        ssr_mode=False,
        mcp_server=False,
        theme=theme,
        **kwargs,
    )
