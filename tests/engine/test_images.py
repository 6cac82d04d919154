"""Safe decoding: every picture mode becomes 8-bit RGB, every failure an ImageError with a plain sentence."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, check_image, is_image_path, load_rgb


def _png_header(width: int, height: int) -> bytes:
    """A PNG that only declares its size (1-bit grey) and holds no pixel data: decoding it would fail."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _noise_jpeg(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def _assert_rgb(img: Image.Image) -> None:
    assert img.mode == "RGB"
    assert np.asarray(img).dtype == np.uint8


def _pixel(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.asarray(img)[y, x])
    return r, g, b


def test_extensions_and_is_image_path(tmp_path: Path) -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"} == IMAGE_EXTENSIONS
    assert is_image_path(tmp_path / "a.JPG")
    assert is_image_path("photo.webp")
    assert not is_image_path(tmp_path / ".hidden.jpg")
    assert not is_image_path("notes.txt")
    assert not is_image_path("no_suffix")


def test_png_named_jpg_decodes(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.new("RGB", (12, 8), (10, 200, 30)).save(path, format="PNG")
    img = load_rgb(path)
    _assert_rgb(img)
    assert _pixel(img, 3, 3) == (10, 200, 30)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    img = load_rgb(path)
    _assert_rgb(img)
    r, g, b = _pixel(img, 8, 8)
    assert r > 200 and g < 50 and b < 50


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((10, 12), 32768, dtype=np.uint16)).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I;16")  # really stored with 16 bits
    img = load_rgb(path)
    _assert_rgb(img)
    assert _pixel(img, 5, 5) == (128, 128, 128)  # 32768 / 257 = 127.5, rounded
    assert img.size == (12, 10)


def test_grayscale_and_one_bit(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 77).save(tmp_path / "grey.png")
    Image.new("1", (8, 8), 1).save(tmp_path / "bw.png")
    assert _pixel(load_rgb(tmp_path / "grey.png"), 1, 1) == (77, 77, 77)
    assert _pixel(load_rgb(tmp_path / "bw.png"), 1, 1) == (255, 255, 255)


def test_palette_with_transparency_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (transparent), index 1 blue
    img.putpixel((0, 0), 1)
    img.save(path, transparency=0)
    out = load_rgb(path)
    _assert_rgb(out)
    assert _pixel(out, 0, 0) == (0, 0, 255)
    assert _pixel(out, 5, 5) == (255, 255, 255)


def test_rgba_and_la_composited_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "half.png")
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "clear.png")
    r, g, b = _pixel(load_rgb(tmp_path / "half.png"), 2, 2)
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1
    assert _pixel(load_rgb(tmp_path / "clear.png"), 2, 2) == (255, 255, 255)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("P", (10, 10), index) for index in range(3)]
    for frame in frames:
        frame.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as stored:
        assert getattr(stored, "n_frames", 1) == 3
    img = load_rgb(path)
    _assert_rgb(img)
    assert _pixel(img, 4, 4) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), "red").save(path, exif=exif)
    assert load_rgb(path).size == (20, 40)


def test_draft_decodes_jpeg_at_reduced_size(tmp_path: Path) -> None:
    path = _noise_jpeg(tmp_path / "big.jpg", (512, 384))
    assert load_rgb(path).size == (512, 384)
    small = load_rgb(path, draft_size=(64, 64))
    _assert_rgb(small)
    assert 64 <= small.width < 512 and 48 <= small.height < 384


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b""), "The file is empty."),
        (lambda p: p.write_text("hello, I am not a picture\n"), "The file is not a picture"),
    ],
    ids=["empty", "text"],
)
def test_not_a_picture(tmp_path: Path, make: Callable[[Path], object], expected: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageError, match=expected):
        load_rgb(path)
    reason = check_image(path)
    assert reason is not None and reason.startswith(expected)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_picture(tmp_path: Path, suffix: str) -> None:
    whole = tmp_path / f"whole{suffix}"
    pixels = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert check_image(whole) is None
    with pytest.raises(ImageError, match="cut short"):
        load_rgb(cut)
    assert check_image(cut) == "The picture is cut short (the file is truncated or damaged)."


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert check_image(tmp_path / "nope.jpg") == "The file does not exist."
    assert check_image(tmp_path) == "This is a folder, not a picture."


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _noise_jpeg(tmp_path / "locked.jpg")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # chmod 0 does not stop root, so refuse the open itself
    assert check_image(path) == "The file cannot be read (permission denied)."


def test_too_large_is_refused_before_decoding(tmp_path: Path) -> None:
    # The files hold no pixel data: decoding them would report damage, so "too large" proves no decode happened.
    big = tmp_path / "big.png"
    big.write_bytes(_png_header(9000, 9000))
    assert check_image(big) == "The picture is too large (9000 x 9000 pixels; the limit is 64 million pixels)."
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(40000, 40000))  # beyond Pillow's own decompression-bomb limit too
    with pytest.raises(ImageError, match="too large"):
        load_rgb(huge)
    reason = check_image(big, max_pixels=100_000_000)  # allowed now, so decoded: and it is damaged
    assert reason is not None and "too large" not in reason


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = _noise_jpeg(tmp_path / "photo.jpg", (100, 80))
    assert MAX_PIXELS == 64_000_000
    assert check_image(path, max_pixels=8000) is None
    assert check_image(path, max_pixels=7999) == "The picture is too large (100 x 80 pixels; the limit is 7999 pixels)."


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,  # JPEG start, then garbage
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,  # PNG signature, then garbage
        b"GIF89a" + b"\xff" * 50,
        b"BM" + b"\x00" * 60,
        b"II*\x00" + b"\x08\x00\x00\x00" + b"\xff" * 40,  # TIFF header pointing at garbage
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
    ],
    ids=["jpeg", "png", "gif", "bmp", "tiff", "webp"],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_garbage_after_a_valid_signature_raises_only_image_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.img.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message


# --- more bad and odd pictures (issue #8) --------------------------------------------------------------------------


def test_a_one_pixel_picture_decodes(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (9, 99, 199)).save(path)
    img = load_rgb(path)
    _assert_rgb(img)
    assert img.size == (1, 1) and _pixel(img, 0, 0) == (9, 99, 199)


def test_names_with_spaces_and_non_ascii_letters_decode(tmp_path: Path) -> None:
    folder = tmp_path / "Bäume und Sträucher"
    folder.mkdir()
    path = _noise_jpeg(folder / "été à Zürich 日本 01.jpg")
    assert check_image(path) is None
    assert load_rgb(str(path)).size == (96, 64)


def test_real_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    # A valid PNG of 9000 x 9000 pixels in 10 KB: it would decode, so only the size limit stops it.
    valid = tmp_path / "valid-bomb.png"
    Image.new("1", (9000, 9000)).save(valid)
    assert valid.stat().st_size < 100_000
    assert check_image(valid) == "The picture is too large (9000 x 9000 pixels; the limit is 64 million pixels)."
    # A 16 x 16 JPEG whose header claims 60000 x 60000: Pillow itself refuses it on opening; the sentence still
    # gives the size (decoding would have found it damaged instead).
    claimed = tmp_path / "claims-60000.jpg"
    Image.new("RGB", (16, 16), "grey").save(claimed)
    data = bytearray(claimed.read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    claimed.write_bytes(bytes(data))
    assert check_image(claimed) == "The picture is too large (3,600 million pixels; the limit is 64 million pixels)."
    header_only = tmp_path / "huge.png"
    header_only.write_bytes(_png_header(40000, 40000))
    assert check_image(header_only) == ("The picture is too large (1,600 million pixels; the limit is 64 million "
                                        "pixels).")


def test_links_that_loop_or_lead_nowhere(tmp_path: Path) -> None:
    a, b, moved = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "moved.jpg"
    try:
        a.symlink_to(b)
        b.symlink_to(a)
        moved.symlink_to(tmp_path / "old" / "photo.jpg")
    except OSError:
        pytest.skip("symbolic links are not available here")
    loop = "The file is a link that leads back to itself (a loop of symbolic links): remove the link."
    assert check_image(a) == loop and check_image(b) == loop
    assert check_image(moved) == (f"The file is a link to {tmp_path / 'old' / 'photo.jpg'}, which does not exist: "
                                  "put the picture back or remove the link.")
    assert check_image(tmp_path / "never-there.jpg") == "The file does not exist."


def test_chmod_000_makes_a_picture_unreadable(tmp_path: Path) -> None:
    path = _noise_jpeg(tmp_path / "locked.jpg")
    path.chmod(0)
    try:
        try:
            path.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("chmod 000 does not stop this process from reading (it runs as root, or the file system "
                        "ignores permissions): test_permission_denied checks the same sentence with a refused open")
        assert check_image(path) == "The file cannot be read (permission denied)."
    finally:
        path.chmod(0o644)
