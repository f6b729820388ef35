"""A generated corpus of hostile, broken and unusual image files, with what preprocess must make of each.

``write_bad_corpus(root)`` writes every kind below ``root`` and returns a ``Corpus``: for each
relative path, either the pixels the 64x64 output row must show (``Probe``s), or the manifest
reason it must be skipped under, for the params defaults (image_size 64, min_size 32). Special
entries (FIFO, link loops) are listed apart, since the fetch stage leaves them behind.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE, GREEN = (220, 20, 30), (20, 40, 210), (30, 200, 60)


@dataclass(frozen=True)
class Probe:
    """The output row must hold ``rgb`` (within ``tol``) at row ``y``, column ``x``."""

    y: int
    x: int
    rgb: tuple[int, int, int]
    tol: int = 0


@dataclass
class Corpus:
    """What preprocess must report for the corpus; paths are relative to its root."""

    used: dict[str, list[Probe]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> relative paths
    duplicates: dict[str, str] = field(default_factory=dict)  # dropped copy -> the one kept
    ignored: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)  # not regular files: fetch leaves them out

    def skip(self, reason: str, rel: str) -> None:
        self.skipped.setdefault(reason, []).append(rel)


def display(rel: str) -> str:
    """How the manifest spells a relative path: undecodable bytes as \\xNN."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _flat(rgb: tuple[int, int, int], tol: int = 0) -> list[Probe]:
    """Probes for a one-colour image: centre and corners."""
    return [Probe(y, x, rgb, tol) for y, x in ((32, 32), (2, 2), (61, 61))]


def _halves(left, right, tol: int = 0, vertical: bool = False) -> list[Probe]:
    """Probes for an image split down the middle (or across it when ``vertical``)."""
    probes = [(32, 8, left), (32, 56, right)]
    return [Probe(x, y, c, tol) if vertical else Probe(y, x, c, tol) for y, x, c in probes]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A white 1-bit PNG built row by row, so a huge one costs kilobytes and no pixel buffer.

    ``rows`` below ``height`` stops the pixel data early (a header promising more than is there).
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte "none", then set bits: white
    packer, parts = zlib.compressobj(9), []
    block = row * max(1, (1 << 20) // len(row))
    remaining = len(row) * (height if rows is None else rows)
    while remaining > 0:
        parts.append(packer.compress(block[:remaining]))
        remaining -= len(block)
    parts.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _split(mode: str, size: tuple[int, int], left, right) -> Image.Image:
    """An image in colour ``left`` with its right half in colour ``right``."""
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, *size))
    return img


def _usable(c: Corpus, root: Path) -> None:
    """Kinds preprocess must decode, each with a colour layout that shows a wrong conversion."""
    def put(rel: str, data: bytes, probes: list[Probe]) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        c.used[rel] = probes

    put("gray_L.png", _encoded(Image.new("L", (40, 40), 90), "PNG"), _flat((90, 90, 90)))
    put("bilevel_1.png", _encoded(_split("1", (40, 40), 1, 0), "PNG"),
        _halves((255, 255, 255), (0, 0, 0)))
    put("rgba_opaque.png", _encoded(Image.new("RGBA", (40, 40), (10, 20, 30, 255)), "PNG"),
        _flat((10, 20, 30)))
    # Transparent halves must come out white, the opaque halves in their own colour.
    put("la_transparent.png", _encoded(_split("LA", (40, 40), (40, 255), (40, 0)), "PNG"),
        _halves((40, 40, 40), (255, 255, 255)))
    palette = _split("P", (40, 40), 1, 0)
    palette.putpalette([0, 0, 0, *RED])
    put("p_transparent.png", _encoded(palette, "PNG", transparency=0),
        _halves(RED, (255, 255, 255)))
    deep = np.full((40, 40), 0x8080, dtype=np.uint16)  # 8-bit clipping would give 255, not 128
    put("deep_I16.png", _encoded(Image.fromarray(deep), "PNG"), _flat((128, 128, 128)))
    put("cmyk.jpg", _encoded(Image.new("CMYK", (40, 40), (0, 255, 0, 0)), "JPEG", quality=95),
        _flat((255, 0, 255), tol=8))
    frames = [Image.new("RGB", (40, 40), colour) for colour in (RED, BLUE)]
    put("animated.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                 duration=100, loop=0), _flat(RED, tol=12))
    # Stored sideways, red left of blue; orientation 6 turns it upright: red above blue.
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif_rotated.jpg", _encoded(_split("RGB", (80, 40), RED, BLUE), "JPEG", quality=95,
                                     exif=exif.tobytes()), _halves(RED, BLUE, tol=12, vertical=True))
    put("lossless.webp", _encoded(Image.new("RGB", (40, 40), (30, 160, 90)), "WEBP", lossless=True),
        _flat((30, 160, 90)))
    put("plain.tif", _encoded(Image.new("RGB", (40, 40), (200, 100, 50)), "TIFF"),
        _flat((200, 100, 50)))
    put("float_F.tif", _encoded(Image.fromarray(np.full((40, 40), 77.0, np.float32), "F"), "TIFF"),
        _flat((77, 77, 77)))
    put("plain.bmp", _encoded(Image.new("RGB", (40, 40), (5, 200, 250)), "BMP"), _flat((5, 200, 250)))
    put("UPPER.JPG", _encoded(Image.new("RGB", (40, 40), (120, 60, 200)), "JPEG", quality=95),
        _flat((120, 60, 200), tol=8))
    put("icon.ico", _encoded(Image.new("RGB", (48, 48), (70, 70, 10)), "ICO"), _flat((70, 70, 10)))
    put("plain.ppm", _encoded(Image.new("RGB", (40, 40), (1, 250, 3)), "PPM"), _flat((1, 250, 3)))
    put("png_named.gif", _encoded(Image.new("RGB", (40, 40), (33, 66, 99)), "PNG"),
        _flat((33, 66, 99)))
    # 40 x 1000: only the middle 40 columns survive the centre crop, and they are green.
    wide = Image.new("RGB", (1000, 40), RED)
    wide.paste(GREEN, (480, 0, 520, 40))
    put("wide_aspect.png", _encoded(wide, "PNG"), [Probe(32, x, GREEN) for x in (4, 32, 59)])
    bad_exif = _encoded(Image.new("RGB", (40, 40), (90, 10, 90)), "JPEG", quality=95)
    junk = b"Exif\x00\x00" + b"MM\x00\x2a\xff\xff\xff\xff" + bytes(range(256)) * 2
    segment = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    put("broken_exif.jpg", bad_exif[:2] + segment + bad_exif[2:], _flat((90, 10, 90), tol=8))
    put("folder.jpg/inside.png", _encoded(Image.new("RGB", (40, 40), (1, 2, 3)), "PNG"),
        _flat((1, 2, 3)))
    non_utf8 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name on a UTF-8 system
    put(non_utf8, _encoded(Image.new("RGB", (40, 40), (44, 55, 66)), "PNG"), _flat((44, 55, 66)))
    os.symlink("gray_L.png", root / "link_to_gray.png")  # a good link is followed ...
    c.duplicates["link_to_gray.png"] = "gray_L.png"  # ... and its pixels are a duplicate


def _unusable(c: Corpus, root: Path) -> None:
    """Kinds preprocess must skip, each under the manifest reason that says why."""
    def put(rel: str, data: bytes, reason: str) -> None:
        (root / rel).write_bytes(data)
        c.skip(reason, rel)

    jpeg = _encoded(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    png = _encoded(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)),
                   "PNG")
    put("truncated.jpg", jpeg[: len(jpeg) * 3 // 5], "corrupt")
    put("truncated.png", png[: len(png) // 2], "corrupt")
    put("zero_bytes.jpg", b"", "empty")
    put("page.jpg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n", "not_an_image")
    put("drawing.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>',
        "not_an_image")
    put("new\nline.jpg", b"a name with a line break and text inside", "not_an_image")
    put("one_pixel.png", _encoded(Image.new("RGB", (1, 1), (1, 1, 1)), "PNG"), "too_small")
    # Over twice Image.MAX_IMAGE_PIXELS (Pillow raises), and between one and two times (it warns).
    put("bomb.png", bilevel_png(20_000, 10_000), "too_large")
    put("bomb_warns.png", bilevel_png(12_000, 10_000), "too_large")
    put("header_only_bomb.png", bilevel_png(100_000, 100_000, rows=0), "too_large")
    # Under the pixel limit, but resizing its 40-pixel side to 64 makes 64 x 3,200,000 pixels.
    put("needle.png", bilevel_png(40, 2_000_000), "too_large")


def _special(c: Corpus, root: Path) -> None:
    """Entries that are not regular files: opening some of them would block or fail."""
    os.mkfifo(root / "fifo.jpg")
    os.symlink("loop_b.jpg", root / "loop_a.jpg")
    os.symlink("loop_a.jpg", root / "loop_b.jpg")
    os.symlink("nowhere.png", root / "dangling.png")
    os.symlink("fifo.jpg", root / "link_to_fifo.jpg")
    os.symlink("/dev/zero", root / "endless.jpg")  # a reader would never reach the end
    for rel in ("dangling.png", "endless.jpg", "fifo.jpg", "link_to_fifo.jpg", "loop_a.jpg",
                "loop_b.jpg"):
        c.skip("unreadable", rel)
        c.special.append(rel)
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")  # a folder loop: must not be walked forever


def _ignored(c: Corpus, root: Path) -> None:
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._gray_L.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / ".hidden.jpg").write_bytes(b"editor swap file")
    (root / "notes.txt").write_text("not an image extension\n")
    c.ignored += [".hidden.jpg", "__MACOSX", "notes.txt"]


def write_bad_corpus(root: Path) -> Corpus:
    """Write every kind under ``root`` (created) and return what preprocess must report."""
    root.mkdir(parents=True)
    corpus = Corpus()
    for part in (_usable, _unusable, _special, _ignored):
        part(corpus, root)
    return corpus
