"""Every kind of bad or odd picture a user's folder may hold, generated (nothing is downloaded).

Used by the tests (tests/engine/test_bad_inputs.py, tests/gui/test_health_panel.py) and by
bench/bad_inputs_report.py, so that the table in docs/bad-inputs.md is made from exactly what the tests check.
"""

from __future__ import annotations

import contextlib
import pathlib
import struct
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
from PIL import Image

LOCKED = "locked.jpg"  # chmod 000: see refused_open for when that does not stop reading


class Picture(NamedTuple):
    description: str
    name: str


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: refused on its size alone, or else found damaged."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def jpeg_claiming(path: Path, width: int, height: int) -> None:
    """A 16 x 16 JPEG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    Image.new("RGB", (16, 16), "grey").save(path, format="JPEG")
    data = bytearray(path.read_bytes())
    sof = data.find(b"\xff\xc0")  # start of frame: length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def make_bad_pictures(folder: Path) -> tuple[list[Picture], list[Picture]]:
    """Write the bad pictures (that cannot be used) and the odd ones (that can) into ``folder``.

    Returns (bad, odd). Needs symbolic links (raises OSError where they are not allowed, as on some Windows accounts).
    """
    folder.mkdir(parents=True, exist_ok=True)
    bad: list[Picture] = []
    odd: list[Picture] = []

    def add(kind: list[Picture], description: str, name: str, make: Callable[[Path], object]) -> None:
        make(folder / name)
        kind.append(Picture(description, name))

    def truncated(p: Path) -> None:
        whole = folder / ".whole.jpg"
        noise((96, 64)).save(whole, quality=90)
        p.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        whole.unlink()

    def loop(p: Path) -> None:
        p.symlink_to(folder / "loop-b.jpg")
        (folder / "loop-b.jpg").symlink_to(p)

    add(bad, "zero-byte file", "empty.jpg", lambda p: p.write_bytes(b""))
    add(bad, "truncated JPEG (first half of the file)", "truncated.jpg", truncated)
    add(bad, "text file named .jpg", "notes.jpg", lambda p: p.write_text("shopping list: eggs, milk\n"))
    add(bad, "web page saved as .png (a failed download)", "download.png",
        lambda p: p.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n"))
    add(bad, "decompression bomb: PNG declaring 40000 x 40000 pixels", "bomb.png",
        lambda p: p.write_bytes(png_header(40000, 40000)))
    add(bad, "decompression bomb: a real, valid 9000 x 9000 PNG of 10 KB", "bomb-real.png",
        lambda p: Image.new("1", (9000, 9000)).save(p))
    add(bad, "decompression bomb: JPEG declaring 60000 x 60000 pixels", "bomb.jpg",
        lambda p: jpeg_claiming(p, 60000, 60000))
    add(bad, "garbage after a WebP signature", "garbage.webp",
        lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20))
    add(bad, "symbolic link loop (loop-a.jpg -> loop-b.jpg -> loop-a.jpg)", "loop-a.jpg", loop)
    bad.append(Picture("the other half of that loop", "loop-b.jpg"))
    add(bad, "symbolic link to a picture that was deleted", "moved.jpg",
        lambda p: p.symlink_to(folder / "gone" / "x.jpg"))
    add(bad, "unreadable file (chmod 000)", LOCKED, lambda p: (noise((32, 32)).save(p), p.chmod(0)))

    def palette(p: Path) -> None:
        img = Image.new("P", (32, 32), 0)
        img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
        img.putpixel((3, 3), 1)
        img.save(p, transparency=0)

    def animated(p: Path) -> None:
        frames = [Image.new("P", (32, 32), i) for i in range(3)]
        for frame in frames:
            frame.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)

    def rotated(p: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        Image.new("RGB", (40, 20), "red").save(p, exif=exif)

    add(odd, "PNG named .jpg", "really-a-png.jpg", lambda p: Image.new("RGB", (32, 24), "green").save(p, "PNG"))
    add(odd, "CMYK JPEG", "cmyk.jpg", lambda p: Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p))
    add(odd, "16-bit grey PNG", "grey16.png",
        lambda p: Image.fromarray(np.full((24, 32), 40000, dtype=np.uint16)).save(p))
    add(odd, "8-bit greyscale", "grey.png", lambda p: Image.new("L", (32, 32), 90).save(p))
    add(odd, "palette PNG with transparency", "palette.png", palette)
    add(odd, "RGBA PNG (half transparent)", "rgba.png",
        lambda p: Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(p))
    add(odd, "animated GIF (3 frames)", "animated.gif", animated)
    add(odd, "EXIF-rotated photo (orientation 6)", "rotated.jpg", rotated)
    add(odd, "1 x 1 picture", "one-pixel.png", lambda p: Image.new("RGB", (1, 1), "blue").save(p))
    add(odd, "name with spaces and non-ASCII letters", "été à Zürich 日本 01.jpg", lambda p: noise((32, 32), 3).save(p))
    return bad, odd


def chmod_blocks(path: Path) -> bool:
    """Whether chmod 000 really stops this process from reading ``path`` (not for root, nor on Windows)."""
    try:
        with open(path, "rb"):
            return False
    except PermissionError:
        return True


@contextlib.contextmanager
def refused_open(names: set[str]) -> Iterator[None]:
    """Opening the named files fails with "permission denied", as chmod 000 does for anyone but root (the engine
    opens pictures with ``Path.open``). Used only where chmod does not block reading."""
    original = pathlib.Path.open

    def open_(self: Path, *args: object, **kwargs: object):
        if self.name in names:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    pathlib.Path.open = open_  # type: ignore[method-assign]
    try:
        yield
    finally:
        pathlib.Path.open = original  # type: ignore[method-assign]


@contextlib.contextmanager
def unreadable(folder: Path) -> Iterator[bool]:
    """The locked picture in ``folder`` made unreadable: by its chmod 000 when that blocks reading, else (as root)
    by refusing its open. Yields whether the refusal is simulated."""
    if chmod_blocks(folder / LOCKED):
        yield False
    else:
        with refused_open({LOCKED}):
            yield True


def good_classes(root: Path, classes: tuple[str, ...] = ("cats", "dogs"), per_class: int = 12) -> Path:
    """Plain, readable class folders of 32 x 32 pictures."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = (200 - 150 * c, 90 + 3 * i, 40 + 150 * c)
            Image.new("RGB", (32, 32), colour).save(root / cls / f"{cls}_{i:02d}.png")
    return root


__all__ = ["LOCKED", "Picture", "chmod_blocks", "good_classes", "jpeg_claiming", "make_bad_pictures", "noise",
           "png_header", "refused_open", "unreadable"]
