"""The ``image`` modality: a manifest value (a path, bytes or a PIL image) -> an RGB image.

The raw object is a loaded RGB :class:`PIL.Image.Image`, detached from any file: it is
picklable, so it can cross data-loader worker processes, and every encoder of the modality
can count on three channels.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from mmplug import DataError, Modality, brief
from mmplug_image import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS

#: What Pillow raises for a file it can't decode: the formats' plugins use all of these.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)

#: 16-bit grayscale modes, whose values are scaled to 8 bits rather than clipped ("I" is how
#: older Pillow versions open 16-bit PNGs; newer ones say "I;16").
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")

#: Transparent pixels are composited onto this; a plain convert("RGB") would show whatever
#: colour happens to be stored under alpha 0 (often black).
_BACKGROUND = (255, 255, 255)


class ImageModality(Modality):
    """Loads images as RGB: palette, grayscale, alpha and CMYK converted, EXIF orientation applied.

    Args:
        max_pixels: images with more pixels than this (width x height) are refused before
            decoding. Pillow's own hard limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, still
            applies on top; raise that too for larger images.
        max_aspect_ratio: images whose long side is more than this many times the short
            side are refused before decoding (the encoder resizes the short side up).
    """

    name = "image"

    def __init__(
        self,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    ):
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
        if not max_aspect_ratio >= 1:
            raise ValueError(f"max_aspect_ratio must be at least 1, got {max_aspect_ratio}")
        self.max_pixels = max_pixels
        self.max_aspect_ratio = max_aspect_ratio

    def load(self, value: Any, *, root: str | Path | None = None) -> Image.Image:
        """Load one image.

        Args:
            value: a path (``str`` or ``PathLike``; relative paths resolve against ``root``),
                the encoded file as ``bytes``, or a ``PIL.Image.Image``.
            root: the folder relative paths resolve against (the manifest's folder).

        Returns:
            A loaded RGB image with EXIF orientation applied, not tied to any open file.

        Raises:
            DataError: the file is missing, not an image, truncated or corrupt, or too large;
                the message names the path (or says ``bytes``/``PIL image``).
        """
        if isinstance(value, Image.Image):
            source = _describe_pil(value)
            self._check_size(value.size, source)
            return _decode(value, source, owned=False)
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            return self._open(io.BytesIO(data), f"image bytes ({len(data):,} bytes)")
        if isinstance(value, str | PathLike):
            path = self.resolve_path(os.fspath(value), root)
            return self._open(path, f"image file {str(path)!r}")
        raise DataError(
            f"image: expected a path, bytes or a PIL image, got {type(value).__name__}: "
            f"{brief(value)}"
        )

    def _open(self, source: Path | io.BytesIO, what: str) -> Image.Image:
        try:
            with warnings.catch_warnings():
                # Pillow warns above its own limit; ours, checked below, is what applies.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)
        except Image.DecompressionBombError as exc:
            raise DataError(f"{what}: refused as a possible decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise DataError(f"{what}: not an image, or a format Pillow can't read") from exc
        except _DECODE_ERRORS as exc:
            raise DataError(f"{what}: can't open it: {type(exc).__name__}: {exc}") from exc
        # Image.open only read the header: the size is known before any pixel is decoded.
        try:
            self._check_size(image.size, what)
            return _decode(image, what, owned=True)
        finally:
            image.close()  # a multi-frame file stays open after load() otherwise

    def _check_size(self, size: tuple[int, int], what: str) -> None:
        pixels = size[0] * size[1]
        if pixels > self.max_pixels:
            raise DataError(
                f"{what}: {size[0]}x{size[1]} = {pixels:,} pixels is over the limit of "
                f"{self.max_pixels:,} (max_pixels); refused as a possible decompression bomb"
            )
        short, long = sorted(size)
        if long > self.max_aspect_ratio * max(short, 1):
            raise DataError(
                f"{what}: {size[0]}x{size[1]} pixels is more than {self.max_aspect_ratio:g} "
                "times as long as it is wide (max_aspect_ratio); refused, since resizing its "
                "short side to the encoder's size would make it enormous"
            )


def _describe_pil(image: Image.Image) -> str:
    filename = getattr(image, "filename", "")
    return f"PIL image from {str(filename)!r}" if filename else "PIL image"


def _decode(image: Image.Image, what: str, *, owned: bool) -> Image.Image:
    """Decode all pixels now, apply EXIF orientation and convert to RGB.

    Decoding here (``load()``) is what turns a truncated file into an error at load time,
    naming the file, instead of an error deep inside a data-loader worker later.

    Args:
        image: an opened image.
        what: names the image in error messages.
        owned: whether ``image`` may be modified (we opened it), or is the caller's.
    """
    try:
        image.load()
        if owned:
            ImageOps.exif_transpose(image, in_place=True)  # saves a copy of a large image
        else:
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{what}: refused as a possible decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        reason = "truncated or corrupt" if isinstance(exc, OSError) else "corrupt"
        raise DataError(f"{what}: {reason}: {type(exc).__name__}: {exc}") from exc
    try:
        return to_rgb(image)
    except ValueError as exc:
        raise DataError(f"{what}: can't convert its mode {image.mode!r} to RGB: {exc}") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image from any Pillow mode.

    Transparency (RGBA, LA, PA, their premultiplied forms, or a palette with a transparent
    entry) is composited onto white. 16-bit grayscale (``I;16`` modes, and ``I``, which older
    Pillow versions use for 16-bit PNGs) is scaled to 8 bits. Always returns a new image, so
    the result never shares state with a file that is about to be closed.

    Raises:
        ValueError: Pillow can't convert the mode to RGB.
    """
    mode = image.mode
    if mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
        mode = image.mode
    if mode in _SIXTEEN_BIT:
        # 16-bit values (0..65535): a plain conversion would clip everything above 255 to white.
        image = image.convert("I").point(lambda v: v / 256).convert("L")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
