"""The preprocessing spec (``preprocessing.json``) and its numpy/Pillow implementation, plus safe decoding.

The spec is written into every checkpoint by distill and into every bundle by export; the runtime
and export's evaluation both run it through ``preprocess_image``. It reproduces
``distill.transforms.eval_transform`` (torchvision) step by step, using the same PIL calls that
torchvision makes on PIL images, so the result matches it to float32 rounding (the parity test
holds it to 1e-5):

1. convert to RGB (``Image.convert``; alpha is dropped, not composited, as in training);
2. resize so the shorter side is ``resize_size``; the longer side becomes
   ``int(resize_size * long / short)`` (torchvision's rule), with PIL's antialiased filter;
3. centre crop to ``input_size``: top = ``int(round((h - H) / 2))``; a crop larger than the image
   is zero-padded the way torchvision pads (``(H - h) // 2`` before);
4. float32 ``pixel / scale``, then ``(x - mean) / std`` per channel, HWC -> CHW.

EXIF orientation is not applied, because the training transform does not apply it either.

JPEG draft decoding (``decode="jpeg-draft"``, opt-in per bundle): libjpeg decodes a JPEG straight
at 1/2, 1/4 or 1/8 of its size in the DCT domain (Pillow's ``Image.draft``), the largest reduction
that keeps the image at least as large as step 2's resized size; step 2 then resizes that smaller
image to the same size, and steps 3-4 are unchanged. The pixels differ slightly from the exact
path (the DCT reduction is not PIL's filter), so export measures the top-1 parity on the bundle's
own evaluation images and the runtime takes this path by default only where export accepted it.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from formats.errors import UserError

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: larger images are refused before they are decoded
# Our own limit (max_pixels, checked from the header before decoding) decides; Pillow's warning for images
# above its 89 MP default would only precede our one clear error, or second-guess a limit the user raised.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# The resized image before the centre crop: a 4x40,000 file (a few hundred bytes) resized to a
# shorter side of 256 would be 256x2,560,000 pixels (2 GB). Above this many pixels only the
# region the crop keeps is resized (Pillow's box resize: the same filter taps, rounded on their
# own region, so a few pixels differ by a few levels of 255), so no request allocates more than
# this. Every image with an aspect ratio up to 61:1 (at a 256 resize) takes the exact path.
MAX_RESIZED_PIXELS = 4_000_000
DECODE_MODES = ("exact", "jpeg-draft")


@dataclass(frozen=True)
class DraftParity:
    """What export measured for JPEG draft decoding on the bundle's evaluation images."""

    images: int  # JPEGs that draft decoding reduces (the others decode the same either way)
    top1_exact: float | None  # fraction, exact decoding, on those images
    top1_draft: float | None
    agreement: float | None  # fraction of those images with the same top-1 class
    accepted: bool  # the runtime's default ("auto") takes the draft path only when true
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "top1_exact": self.top1_exact, "top1_draft": self.top1_draft,
                "agreement": self.agreement, "accepted": self.accepted, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Any) -> "DraftParity":
        try:
            opt = {k: None if d[k] is None else float(d[k]) for k in ("top1_exact", "top1_draft", "agreement")}
            return cls(images=int(d["images"]), accepted=d["accepted"] is True, reason=str(d["reason"]), **opt)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"preprocessing.json: jpeg_draft is malformed ({exc!r}): re-export the bundle") from None


@dataclass(frozen=True)
class PreprocessSpec:
    """``preprocessing.json`` of a bundle, checked."""

    input_size: tuple[int, int]  # (H, W)
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 255.0
    jpeg_draft: DraftParity | None = None  # export's measurement; None: not measured (exact decoding)

    def __post_init__(self) -> None:
        if self.interpolation not in _FILTERS:
            raise UserError(f"preprocessing.json: interpolation {self.interpolation!r} is not one of "
                                   f"{', '.join(_FILTERS)}: re-export the bundle")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UserError("preprocessing.json: mean and std need 3 values each, std > 0: re-export the bundle")
        if min(self.input_size) <= 0 or self.resize_size <= 0 or self.scale <= 0:
            raise UserError("preprocessing.json: sizes and scale must be positive: re-export the bundle")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``preprocessing.json``), every field spelled out."""
        return {
            "input_size": list(self.input_size),  # [H, W] of the model input
            "resize_size": self.resize_size,  # shorter side is resized to this first
            "resize_policy": "shorter_side",
            "crop": "center",
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "color": "RGB",
            "layout": "NCHW",
            "scale": self.scale,  # pixel / scale before (x - mean) / std
            "jpeg_draft": None if self.jpeg_draft is None else self.jpeg_draft.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        expected = {"resize_policy": "shorter_side", "crop": "center", "color": "RGB", "layout": "NCHW"}
        for key, value in expected.items():
            if d.get(key, value) != value:
                raise UserError(f"preprocessing.json: {key}={d[key]!r} is not supported by this runtime "
                                       f"(only {value!r}): re-export the bundle or upgrade the runtime")
        try:
            size = d["input_size"]
            hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
            return cls(input_size=hw, resize_size=int(d["resize_size"]), interpolation=str(d["interpolation"]),
                       mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                       scale=float(d.get("scale", 255.0)),
                       jpeg_draft=None if d.get("jpeg_draft") is None else DraftParity.from_dict(d["jpeg_draft"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"preprocessing.json is malformed ({exc!r}): re-export the bundle") from None


class Drafted(NamedTuple):
    """How a draft-decoded image maps onto its file: the file's (w, h), and the (w, h) extent, in
    the decoded image's pixels, that the file covers (libjpeg pads a partial last block)."""

    source_size: tuple[int, int]
    extent: tuple[float, float]


def preprocess_image(img: Image.Image, spec: PreprocessSpec, drafted: Drafted | None = None) -> np.ndarray:
    """One PIL image -> float32 array (3, H, W), exactly as the training evaluation transform.

    ``drafted``: ``img`` was draft-decoded smaller: the resize follows the file's size and extent,
    so the output has the exact path's geometry."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    img = _resize_and_crop(img, spec.resize_size, spec.input_size, _FILTERS[spec.interpolation], drafted=drafted)
    # (x / scale - mean) / std as one multiply-add per pixel, straight from uint8 HWC into float32 CHW
    std = np.asarray(spec.std, np.float32)
    gain = (1.0 / (np.float32(spec.scale) * std)).astype(np.float32)[:, None, None]  # (3, 1, 1)
    shift = (np.asarray(spec.mean, np.float32) / std)[:, None, None]  # (3, 1, 1)
    chw = np.asarray(img).transpose(2, 0, 1)  # (3, H, W) uint8 view
    x = np.empty(chw.shape, np.float32)
    np.multiply(chw, gain, out=x, casting="unsafe")
    x -= shift
    return x


def preprocess_batch(images: list[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """Images -> float32 (N, 3, H, W)."""
    return np.stack([preprocess_image(img, spec) for img in images])


def _resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side at ``size``, the longer truncated as torchvision does."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _crop_box(w: int, h: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """torchvision's centre crop window (left, top, right, bottom); outside the image when it is
    smaller than the crop (torchvision pads by (crop - size) // 2 first, PIL's crop fills zeros)."""
    crop_h, crop_w = size
    top = -((crop_h - h) // 2) if crop_h > h else int(round((h - crop_h) / 2.0))
    left = -((crop_w - w) // 2) if crop_w > w else int(round((w - crop_w) / 2.0))
    return left, top, left + crop_w, top + crop_h


def _resize_and_crop(img: Image.Image, size: int, crop: tuple[int, int], resample: Image.Resampling,
                     max_resized: int = MAX_RESIZED_PIXELS, drafted: Drafted | None = None) -> Image.Image:
    """Resize the shorter side to ``size``, then centre-crop ``crop`` (H, W): torchvision's
    Resize + CenterCrop. Above ``max_resized`` resized pixels only the cropped region is resized.
    A draft-decoded image (``drafted``) is resized as its file would be."""
    w, h = img.size
    (src_w, src_h), (ext_w, ext_h) = drafted or ((w, h), (w, h))
    new_w, new_h = _resized_size(src_w, src_h, size)
    box = _crop_box(new_w, new_h, crop)
    if (new_w, new_h) == (w, h) and drafted is None:
        return img.crop(box)  # torchvision skips the resize as well
    if new_w * new_h <= max_resized:  # every ordinary image (the exact path, unless drafted)
        return img.resize((new_w, new_h), resample, box=(0, 0, ext_w, ext_h)).crop(box)
    left, top, right, bottom = max(box[0], 0), max(box[1], 0), min(box[2], new_w), min(box[3], new_h)
    sx, sy = ext_w / new_w, ext_h / new_h
    part = img.resize((right - left, bottom - top), resample, box=(left * sx, top * sy, right * sx, bottom * sy))
    if (left, top, right, bottom) == box:
        return part
    out = Image.new(img.mode, (box[2] - box[0], box[3] - box[1]))  # zeros, as the padding above
    out.paste(part, (left - box[0], top - box[1]))
    return out


def load_input(source: str | Path | bytes, spec: PreprocessSpec, max_pixels: int = DEFAULT_MAX_PIXELS,
               decode: str = "exact") -> np.ndarray:
    """A file or encoded bytes -> the model input (3, H, W) float32: what predict, bench and serve run.

    ``decode="jpeg-draft"`` decodes JPEGs reduced in the DCT domain where that keeps them at least
    as large as the resized size (module docstring); other files, and ``"exact"``, decode fully.
    """
    if decode not in DECODE_MODES:
        raise UserError(f"decode {decode!r} is not one of {', '.join(DECODE_MODES)}")
    img, name = _open(source, max_pixels)
    size, drafted = img.size, None
    if decode == "jpeg-draft" and img.format == "JPEG":
        reduced = img.draft("RGB", _resized_size(*size, spec.resize_size))  # (mode, box); unchanged if none fits
        if reduced is not None and img.size != size:
            drafted = Drafted(size, (reduced[1][2], reduced[1][3]))
    _load(img, name)
    return preprocess_image(img, spec, drafted)


def draft_reduces(source: str | Path, spec: PreprocessSpec) -> bool:
    """Whether ``decode="jpeg-draft"`` decodes this file smaller than the exact path (header only)."""
    try:
        with Image.open(source) as img:
            if img.format != "JPEG":
                return False
            new = _resized_size(*img.size, spec.resize_size)
            return img.size[0] >= 2 * new[0] and img.size[1] >= 2 * new[1]
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image fully, refusing non-images, truncated files and decompression bombs.

    Raises ``ImageError`` with an HTTP-style status (400 bad image, 413 too many pixels).
    """
    img, name = _open(source, max_pixels)
    _load(img, name)
    return img


def _open(source: str | Path | bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """The image with its header read and checked, no pixel decoded yet."""
    name = "request body" if isinstance(source, bytes) else str(source)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageError(f"image {name} not found: pass an existing image file", 400) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to decode safely ({exc})", 413) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{name} is not an image Pillow can read ({exc.__class__.__name__}): "
                         f"send a JPEG, PNG, BMP, GIF or WebP file", 400) from None
    # The header gives the size before any pixel is decoded: refuse bombs here.
    pixels = img.size[0] * img.size[1]
    if pixels > max_pixels:
        raise ImageError(f"{name} has {img.size[0]}x{img.size[1]} = {pixels} pixels, over the limit of "
                         f"{max_pixels}: resize it before sending", 413)
    return img, name


def _load(img: Image.Image, name: str) -> None:
    try:
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name} could not be decoded ({exc}): the file is truncated or corrupt", 400) from None


class ImageError(UserError):
    """An input that is not a usable image; ``status`` is the HTTP status the server answers."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
