"""The ``image`` modality: every input becomes a loaded RGB image; every bad file names itself."""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from mmplug import DataError
from mmplug_image.modality import ImageModality

ImageFileFactory = Callable[..., Path]


@pytest.fixture
def modality() -> ImageModality:
    return ImageModality()


def halves(size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]):
    """An RGB image whose left half is ``left`` and right half ``right``."""
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# -- what comes back --------------------------------------------------------------------------


def test_path_relative_to_root_loads_rgb(modality: ImageModality, image_file: ImageFileFactory):
    path = image_file("photo.png")
    image = modality.load("photo.png", root=path.parent)
    assert image.mode == "RGB"
    assert image.size == (48, 32)
    with Image.open(path) as original:
        assert image.tobytes() == original.convert("RGB").tobytes()
    assert modality.load(path).tobytes() == image.tobytes()  # a Path, absolute


def test_grayscale_is_gray_rgb(modality: ImageModality, image_file: ImageFileFactory):
    path = image_file("gray.jpg", Image.new("L", (16, 8), 100))
    image = modality.load(path)
    assert image.mode == "RGB"
    assert close_to(image.getpixel((3, 3)), (100, 100, 100), tolerance=2)


def test_rgba_transparency_becomes_white(modality: ImageModality, image_file: ImageFileFactory):
    rgba = Image.new("RGBA", (4, 1))
    rgba.putdata([(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 0, 128), (0, 255, 0, 255)])
    image = modality.load(image_file("rgba.png", rgba))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 0, 0)
    # The hidden blue under alpha 0 must not show: composited onto white.
    assert image.getpixel((1, 0)) == (255, 255, 255)
    assert close_to(image.getpixel((2, 0)), (127, 127, 127), tolerance=2)
    assert image.getpixel((3, 0)) == (0, 255, 0)


def test_palette_with_and_without_transparency(
    modality: ImageModality, image_file: ImageFileFactory
):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    palette.putdata([0, 1])
    image = modality.load(image_file("palette.png", palette))
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(2)] == [(255, 0, 0), (0, 0, 255)]
    transparent = modality.load(image_file("transparent.gif", palette, transparency=1))
    assert [transparent.getpixel((x, 0)) for x in range(2)] == [(255, 0, 0), (255, 255, 255)]


def test_cmyk_is_converted(modality: ImageModality, image_file: ImageFileFactory):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    for name in ("cmyk.jpg", "cmyk.tiff"):
        image = modality.load(image_file(name, cmyk))
        assert image.mode == "RGB"
        assert close_to(image.getpixel((4, 4)), (255, 0, 0)), name


def test_sixteen_bit_grayscale_is_scaled_not_clipped(
    modality: ImageModality, image_file: ImageFileFactory
):
    deep = Image.new("I;16", (4, 4), 60000)
    image = modality.load(image_file("deep.png", deep))
    assert image.getpixel((0, 0)) == (234, 234, 234)  # 60000 / 256, not clipped to 255


@pytest.mark.parametrize(
    ("orientation", "top", "bottom"),
    [(6, (255, 0, 0), (0, 0, 255)), (8, (0, 0, 255), (255, 0, 0))],
    ids=["rotate-cw", "rotate-ccw"],
)
def test_exif_orientation_is_applied(
    modality: ImageModality,
    image_file: ImageFileFactory,
    orientation: int,
    top: tuple[int, int, int],
    bottom: tuple[int, int, int],
):
    # Stored landscape (left red, right blue) with an Orientation tag saying "rotate to show".
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = image_file("phone.jpg", halves((40, 20), (255, 0, 0), (0, 0, 255)), exif=exif)
    with Image.open(path) as stored:
        assert stored.size == (40, 20)
    image = modality.load(path)
    assert image.size == (20, 40)  # transposed: portrait, as the camera meant it
    assert close_to(image.getpixel((10, 5)), top)
    assert close_to(image.getpixel((10, 34)), bottom)
    assert image.getexif().get(0x0112) in (None, 1)  # not applied twice downstream


def test_bytes_and_pil_inputs(modality: ImageModality, image_file: ImageFileFactory):
    path = image_file("photo.png")
    expected = modality.load(path).tobytes()
    from_bytes = modality.load(path.read_bytes())
    assert (from_bytes.mode, from_bytes.tobytes()) == ("RGB", expected)
    assert modality.load(bytearray(path.read_bytes())).tobytes() == expected
    with Image.open(path) as opened:  # lazily opened, not yet decoded
        from_pil = modality.load(opened)
    assert (from_pil.mode, from_pil.tobytes()) == ("RGB", expected)
    gray = Image.new("L", (3, 3), 7)
    assert modality.load(gray).getpixel((1, 1)) == (7, 7, 7)
    assert gray.mode == "L"  # the caller's image is left alone


def test_result_is_detached_and_picklable(modality: ImageModality, image_file: ImageFileFactory):
    path = image_file("photo.png")
    image = modality.load(path)
    path.unlink()  # nothing still reads the file
    restored = pickle.loads(pickle.dumps(image))  # crosses data-loader worker processes
    assert (restored.mode, restored.size, restored.tobytes()) == ("RGB", (48, 32), image.tobytes())


def test_multi_frame_file_gives_its_first_frame(
    modality: ImageModality, image_file: ImageFileFactory
):
    frames = [Image.new("RGB", (6, 6), color) for color in ((255, 0, 0), (0, 255, 0))]
    path = image_file("anim.gif", frames[0], save_all=True, append_images=frames[1:])
    assert close_to(modality.load(path).getpixel((2, 2)), (255, 0, 0), tolerance=5)


_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"]
_MODES += ["LAB", "HSV", "I", "I;16", "I;16B", "F"]


@settings(max_examples=40, deadline=None)
@given(mode=st.sampled_from(_MODES), width=st.integers(1, 40), height=st.integers(1, 40))
def test_any_mode_and_size_becomes_rgb_of_the_same_size(mode: str, width: int, height: int):
    image = ImageModality().load(Image.new(mode, (width, height)))
    assert (image.mode, image.size) == ("RGB", (width, height))


# -- errors name the file --------------------------------------------------------------------


def test_missing_file_names_the_path(modality: ImageModality, tmp_path: Path):
    with pytest.raises(DataError, match=r"file not found: 'nowhere\.jpg'"):
        modality.load("nowhere.jpg", root=tmp_path)


def test_text_file_named_png_names_the_file(modality: ImageModality, tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    with pytest.raises(DataError, match="not an image") as caught:
        modality.load(path)
    assert str(path) in str(caught.value)


def test_truncated_jpeg_names_the_file(
    modality: ImageModality,
    tmp_path: Path,
    noise_image: Callable[..., Image.Image],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    buffer = io.BytesIO()
    noise_image((64, 64)).save(buffer, format="JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    # The header is intact: opening alone would succeed; decoding is what fails.
    with Image.open(path) as header_only:
        assert header_only.size == (64, 64)
    with pytest.raises(DataError, match="truncated") as caught:
        modality.load(path)
    assert str(path) in str(caught.value)
    with pytest.raises(DataError, match=r"image bytes .*truncated"):
        modality.load(path.read_bytes())


def test_oversized_image_is_refused_before_decoding(
    image_file: ImageFileFactory, monkeypatch: pytest.MonkeyPatch
):
    path = image_file("bomb.png", Image.new("L", (200, 100)))  # a few hundred bytes on disk

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(DataError, match=r"200x100 = 20,000 pixels .*limit of 19,999") as caught:
            ImageModality(max_pixels=19_999).load(path)
    assert str(path) in str(caught.value)
    assert ImageModality(max_pixels=20_000).load(path).size == (200, 100)
    with pytest.raises(DataError, match="20,000 pixels"):
        ImageModality(max_pixels=100).load(Image.new("RGB", (200, 100)))


def test_a_thin_strip_is_refused_before_decoding(
    image_file: ImageFileFactory, monkeypatch: pytest.MonkeyPatch
):
    # 1,000,000 x 1: a kilobyte on disk, under max_pixels, and 32 x 32,000,000 once the
    # encoder resized its short side to 32
    path = image_file("strip.png", Image.new("L", (1_000_000, 1)))
    assert path.stat().st_size < 10_000

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(DataError, match=r"1000000x1 pixels is more than 50 times") as caught:
            ImageModality().load(path)
    assert str(path) in str(caught.value)
    tall = Image.new("RGB", (10, 501))
    with pytest.raises(DataError, match=r"10x501 .*max_aspect_ratio"):
        ImageModality().load(tall)
    assert ImageModality().load(Image.new("RGB", (10, 500))).size == (10, 500)  # 50:1 is fine
    assert ImageModality(max_aspect_ratio=60).load(tall).size == (10, 501)


def test_own_limit_replaces_pillows_warning_and_pillows_hard_limit_is_an_error(
    image_file: ImageFileFactory, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    path = image_file("big.png", Image.new("RGB", (40, 40)))  # 1,600: over Pillow's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ImageModality(max_pixels=10_000).load(path).size == (40, 40)
    huge = image_file("huge.png", Image.new("RGB", (50, 50)))  # 2,500: over 2 * 1,000
    with pytest.raises(DataError, match="decompression bomb") as caught:
        ImageModality(max_pixels=10_000).load(huge)
    assert str(huge) in str(caught.value)


@pytest.mark.parametrize("value", [42, None, ["a.png"], {"path": "a.png"}])
def test_other_values_are_data_errors(modality: ImageModality, value: object):
    with pytest.raises(DataError, match="expected a path, bytes or a PIL image"):
        modality.load(value)


def test_the_message_for_a_deep_or_huge_value_is_short(modality: ImageModality):
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]  # its full repr would recurse too deeply
    for value in (deep, ["x" * 1_000_000]):
        with pytest.raises(DataError, match="expected a path") as info:
            modality.load(value)
        assert len(str(info.value)) < 300


def test_max_pixels_must_be_positive():
    with pytest.raises(ValueError, match="max_pixels"):
        ImageModality(max_pixels=0)
