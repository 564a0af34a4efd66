"""Image preprocessing and the processor that pairs it with the text tokenizer.

RS archives hold more than 8-bit RGB: 16-bit and float GeoTIFF bands, grayscale, palettes,
alpha. Everything is brought to float RGB in [0, 1] by one documented rule
(:func:`to_float_rgb`), then resized (no crop, as the original) and normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin

from .configuration_msa import IMAGENET_MEAN, IMAGENET_STD

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]

# Display stretch for data outside [0, 1]: the percentiles QGIS uses for its default
# "cumulative count cut" of 16-bit and float rasters.
STRETCH_PERCENTILES = (2.0, 98.0)


def _stretch(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, STRETCH_PERCENTILES)
    if high <= low:  # a constant image: fall back to its full range
        low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _channels_last(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``H×W×C`` from ``H×W``, ``H×W×C`` or ``C×H×W`` (C in 1, 3, 4)."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be 2-D (H, W) or 3-D (H, W, C) / (C, H, W), got shape {array.shape}.")
    if array.shape[-1] in (1, 3, 4):
        return array
    if array.shape[0] in (1, 3, 4):
        return np.moveaxis(array, 0, -1)
    raise ValueError(
        f"{name} has shape {array.shape}: expected 1 (gray), 3 (RGB) or 4 (RGBA) channels first or last. "
        "Select three bands of multispectral data first."
    )


def fill_nodata(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Replace non-finite values (NaN or ±inf nodata) by the mean of each channel's finite values.

    ``array`` is ``H×W×C``. A channel without any finite value takes the mean of the whole
    image's finite values; an image without any is an error (there is nothing to show).
    """
    finite = np.isfinite(array)
    if finite.all():
        return array
    if not finite.any():
        raise ValueError(
            f"{name} has no finite pixel values (all {array.size} are NaN or infinite, i.e. nodata): "
            "there is nothing to encode; drop this image or give its valid bands."
        )
    filled = array.astype(np.float64, copy=True)
    image_mean = float(filled[finite].mean())
    for channel in range(filled.shape[-1]):
        valid = finite[..., channel]
        values = filled[..., channel]
        values[~valid] = values[valid].mean() if valid.any() else image_mean
    return filled


def to_float_rgb(image: ImageLike, name: str = "image") -> np.ndarray:
    """Convert one image to a float32 ``H×W×3`` array in [0, 1].

    The rule, by input type:

    * PIL: palette, grayscale, CMYK and alpha modes are converted to RGB by PIL (alpha is
      dropped); 16-bit (``I;16``), 32-bit integer (``I``) and float (``F``) modes are read as
      arrays and follow the array rule.
    * ``uint8`` arrays/tensors: divided by 255.
    * float arrays/tensors already within [0, 1]: used as they are.
    * anything else (``uint16`` and other integers, floats outside [0, 1]): a linear stretch
      between the image's 2nd and 98th percentile, clipped to [0, 1] (a GeoTIFF's raw counts
      rarely use the full 16-bit range, so dividing by 65535 would give a black image).
    * non-finite values (NaN or ±inf, the nodata of float GeoTIFFs) are nodata: before any of
      the above, each is replaced by the mean of its channel's finite values
      (:func:`fill_nodata`), so the result is always finite; an image with no finite value at
      all is a ``ValueError``.

    Gray becomes three equal channels; a fourth (alpha) channel is dropped. Torch tensors are
    taken as ``C×H×W`` (or ``H×W``), as torchvision does.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = np.array(image)
        else:
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)
        image = tensor.numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a PIL image, numpy array or torch tensor, got {type(image).__name__}.")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape}).")
    array = _channels_last(image, name)
    if np.issubdtype(array.dtype, np.floating):
        array = fill_nodata(array, name)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating) and array.min() >= 0.0 and array.max() <= 1.0:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.number):
        array = _stretch(array.astype(np.float64))
    else:
        raise ValueError(f"{name} has unsupported dtype {array.dtype}.")
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        array = array[..., :3]
    return np.ascontiguousarray(array, dtype=np.float32)


class MSAImageProcessor(BaseImageProcessor):
    r"""Converts any image to RGB in [0, 1] (see :func:`to_float_rgb`), resizes it to a square
    ``image_size`` with bilinear antialiased interpolation (no crop), and normalises it.

    Example:

    ```python
    >>> import numpy as np
    >>> from msa_hf import MSAImageProcessor
    >>> processor = MSAImageProcessor(image_size=64)
    >>> geotiff_band_stack = np.random.randint(0, 4096, (3, 300, 300), dtype=np.uint16)
    >>> processor(geotiff_band_stack)["pixel_values"].shape
    torch.Size([1, 3, 64, 64])
    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 224,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(image_size) < 1:
            raise ValueError(f"`image_size` must be a positive integer, got {image_size}.")
        self.image_size = int(image_size)
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]

    def preprocess(
        self, images: ImageLike | Sequence[ImageLike], return_tensors: str | None = "pt", **kwargs: Any
    ) -> BatchFeature:
        """Turn one image or a list of images into ``pixel_values`` (``B×3×image_size×image_size``)."""
        if kwargs:
            raise TypeError(f"MSAImageProcessor got unexpected arguments: {sorted(kwargs)}.")
        if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)) and not (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4
        ):
            images = [images]
        if len(images) == 0:
            raise ValueError("`images` is empty; give at least one image.")
        size = (self.image_size, self.image_size)
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        batch = []
        for index, image in enumerate(images):
            array = to_float_rgb(image, name=f"images[{index}]")
            tensor = torch.from_numpy(array).permute(2, 0, 1)
            if tuple(tensor.shape[-2:]) != size:
                tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
            batch.append((tensor - mean) / std)
        pixel_values = torch.stack(batch)
        if return_tensors not in ("pt", None):
            if return_tensors != "np":
                raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
            pixel_values = pixel_values.numpy()
        return BatchFeature({"pixel_values": pixel_values})

    def __call__(self, images: ImageLike | Sequence[ImageLike], **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)


class MSAProcessor(ProcessorMixin):
    r"""Pairs [`MSAImageProcessor`] with the text tower's tokenizer.

    Captions are padded and truncated to ``text_max_length`` tokens, as the model was trained.

    Example:

    ```python
    >>> from PIL import Image
    >>> processor = MSAProcessor.from_pretrained("path/to/msa-checkpoint")  # doctest: +SKIP
    >>> batch = processor(images=[Image.new("RGB", (256, 256))], text=["two planes near a runway"])  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'pixel_values']
    ```
    """

    attributes = ["image_processor", "tokenizer"]
    if int(transformers.__version__.split(".")[0]) < 5:
        # transformers 4 resolves sub-processors by these names; 5 reads the __init__ signature.
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def __init__(
        self, image_processor: MSAImageProcessor = None, tokenizer: Any = None, text_max_length: int = 31, **kwargs: Any
    ) -> None:
        if image_processor is None or tokenizer is None:
            raise ValueError("MSAProcessor needs both an `image_processor` and a `tokenizer`.")
        self.text_max_length = int(text_max_length)
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any) -> MSAProcessor:
        r"""The processor a model config implies: its image size and normalisation, its caption length.

        Example:

        ```python
        >>> import tempfile
        >>> from pathlib import Path
        >>> from transformers import BertTokenizer
        >>> from msa_hf import MSAConfig, MSAProcessor
        >>> vocab = Path(tempfile.mkdtemp()) / "vocab.txt"
        >>> _ = vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nfield\n")
        >>> processor = MSAProcessor.from_config(MSAConfig.from_preset("msa-tiny"), BertTokenizer(str(vocab)))
        >>> processor(text=["field"])["input_ids"].shape
        torch.Size([1, 16])
        ```
        """
        image_processor = MSAImageProcessor(config.image_size, config.image_mean, config.image_std)
        return cls(image_processor, tokenizer, text_max_length=config.text_max_length)

    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike] | None = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenise ``text`` and/or preprocess ``images`` into model inputs."""
        if images is None and text is None:
            raise ValueError("Give `images`, `text` or both.")
        data: dict[str, Any] = {}
        if text is not None:
            if isinstance(text, (bytes, bytearray)):
                raise ValueError("`text` is bytes, not a string; decode it first, e.g. text.decode('utf-8').")
            if isinstance(text, str):
                text = [text]
            if not isinstance(text, (Sequence, np.ndarray)):
                raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
            text = list(text)
            if not text:
                raise ValueError("`text` is an empty list; give at least one caption (or leave `text` out).")
            bad = [i for i, caption in enumerate(text) if not isinstance(caption, str)]
            if bad:
                found = type(text[bad[0]]).__name__
                hint = "; decode bytes first, e.g. caption.decode('utf-8')" if found in ("bytes", "bytearray") else ""
                raise ValueError(f"`text` must contain strings; entry {bad[0]} is a {found}{hint}.")
            encoded = self.tokenizer(
                text,
                padding="max_length",
                truncation=True,
                max_length=self.text_max_length,
                return_token_type_ids=False,
                return_tensors=return_tensors,
                **kwargs,
            )
            data.update(encoded)
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(data)

    def truncated(self, text: Sequence[str]) -> list[int]:
        """Indices of the texts longer than ``text_max_length`` tokens, whose ends ``__call__``
        cuts off: a search query should say so rather than match on its first words only."""
        ids = self.tokenizer(list(text), truncation=True, max_length=self.text_max_length + 1)["input_ids"]
        return [i for i, row in enumerate(ids) if len(row) > self.text_max_length]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["MSAImageProcessor", "MSAProcessor", "fill_nodata", "to_float_rgb", "STRETCH_PERCENTILES"]
