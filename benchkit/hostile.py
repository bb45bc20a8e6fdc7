"""A corpus of hostile and malformed requests, each with the answer the service documents."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image

from benchkit.images import image_bytes

JPEG = image_bytes("JPEG", size=(320, 240))
PNG = image_bytes("PNG", size=(320, 240))
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64  # ISO-BMFF, not an image


@dataclass
class Case:
    """One request and the status and error code it must get."""

    name: str
    status: int
    code: str | None  # None: the answer is a prediction (200) or not ours to shape
    body: bytes = b""
    content_type: str | None = "image/jpeg"
    files: list[tuple[str, tuple[str, bytes]]] = field(default_factory=list)
    query: str = ""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height zero pixels, compressed without allocating it."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def png_with_dimensions(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is one tiny row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + _chunk(b"IEND", b"")
    )


def gif_with_dimensions(width: int, height: int) -> bytes:
    """A GIF whose logical screen and frame claim width x height."""
    gif = bytearray(image_bytes("GIF", size=(8, 8)))
    gif[6:10] = struct.pack("<HH", width, height)
    frame = gif.index(b",")  # image descriptor
    gif[frame + 5 : frame + 9] = struct.pack("<HH", width, height)
    return bytes(gif)


def jpeg_with_dimensions(width: int, height: int) -> bytes:
    """A JPEG whose start-of-frame claims width x height."""
    jpeg = bytearray(JPEG)
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


def webp_with_dimensions(width: int, height: int) -> bytes:
    """An extended WebP whose canvas claims width x height."""
    vp8x = (
        bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    chunk = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def heif_claiming(fmt: str, width: int, height: int) -> bytes:
    """A HEIC or AVIF of 320x240 whose image spatial extents ('ispe') claim width x height."""
    data = bytearray(image_bytes(fmt, size=(320, 240), quality=50))
    ispe = data.index(b"ispe") + 8  # after the box type, version and flags
    data[ispe : ispe + 8] = struct.pack(">II", width, height)
    return bytes(data)


def bmp_with_dimensions(width: int, height: int) -> bytes:
    bmp = bytearray(image_bytes("BMP", size=(8, 8)))
    bmp[18:26] = struct.pack("<ii", width, height)
    return bytes(bmp)


def corrupt_png_crc() -> bytes:
    png = bytearray(PNG)
    png[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(png)


def image_in_mode(mode: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (300, 200), 128 if mode in ("L", "I;16", "1", "P") else None).save(buf, fmt)
    return buf.getvalue()


def strip(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 200).save(buf, "PNG")
    return buf.getvalue()


def multipart(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (name, data)) for name, data in files]


def cases() -> list[Case]:
    """Build every case (bombs are generated here, not stored)."""
    ok, fmts = (
        [],
        {
            f: image_bytes(f, size=(320, 240))
            for f in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")
        },
    )
    for fmt, data in fmts.items():
        ok.append(
            Case(
                f"truncated-{fmt.lower()}",
                400,
                "undecodable_image",
                data[: len(data) // 2],
                f"image/{fmt.lower()}",
            )
        )
        ok.append(Case(f"header-only-{fmt.lower()}", 400, "undecodable_image", data[:24]))
    return ok + [
        Case("png-bomb-20000x20000", 413, "image_too_large", png_bomb(20_000, 20_000)),
        Case("png-claims-65535x65535", 413, "image_too_large", png_with_dimensions(65535, 65535)),
        Case("gif-claims-65535x65535", 413, "image_too_large", gif_with_dimensions(65535, 65535)),
        Case("jpeg-claims-65000x65000", 413, "image_too_large", jpeg_with_dimensions(65000, 65000)),
        Case("webp-claims-16383x16383", 413, "image_too_large", webp_with_dimensions(16383, 16383)),
        Case("bmp-claims-30000x30000", 413, "image_too_large", bmp_with_dimensions(30000, 30000)),
        Case(
            "heic-claims-65000x65000", 413, "image_too_large", heif_claiming("HEIF", 65000, 65000)
        ),
        Case("avif-claims-7000x7000", 413, "image_too_large", heif_claiming("AVIF", 7000, 7000)),
        # Beyond libavif's own dimension limit (32768): refused as corrupt while parsing.
        Case(
            "avif-claims-65000x65000", 400, "undecodable_image", heif_claiming("AVIF", 65000, 65000)
        ),
        # A picture larger than its header says: libheif's limit is the declared size.
        Case("heic-understates-its-size", 400, "undecodable_image", heif_claiming("HEIF", 32, 24)),
        Case("mp4-video", 415, "unsupported_media_type", MP4, "video/mp4"),
        Case("heic-photo", 200, None, fmts["HEIF"], "image/heic"),
        Case("avif-photo", 200, None, fmts["AVIF"], "image/avif"),
        Case("strip-20000x1", 413, "image_too_large", strip(20_000, 1)),
        Case("png-corrupt-crc", 400, "undecodable_image", corrupt_png_crc()),
        Case("zero-byte-body", 400, "no_image", b""),
        Case(
            "zero-byte-file",
            400,
            "no_image",
            content_type=None,
            files=multipart(("empty.jpg", b"")),
        ),
        Case(
            "multipart-no-file",
            400,
            "no_image",
            content_type=None,
            files=[("other", ("a.jpg", JPEG))],
        ),
        Case("no-body-no-type", 400, "no_image", content_type=None),
        Case(
            "thousands-of-parts",
            413,
            "payload_too_large",
            content_type=None,
            files=[(f"f{i}", ("", b"x")) for i in range(2000)],
        ),
        Case(
            "too-many-files",
            413,
            "too_many_files",
            content_type=None,
            files=multipart(*[(f"{i}.jpg", JPEG) for i in range(17)]),
        ),
        Case("body-over-limit", 413, "payload_too_large", b"\xff\xd8\xff" + b"\x00" * (21 << 20)),
        Case("text-as-image", 415, "unsupported_media_type", b"hello world", "image/jpeg"),
        Case(
            "svg",
            415,
            "unsupported_media_type",
            b"<svg xmlns='http://www.w3.org/2000/svg'><rect/></svg>",
            "image/svg+xml",
        ),
        Case(
            "pdf",
            415,
            "unsupported_media_type",
            b"%PDF-1.7\n%\xe2\xe3\n1 0 obj\n",
            "application/octet-stream",
        ),
        Case(
            "html-named-jpg",
            415,
            "unsupported_media_type",
            content_type=None,
            files=multipart(("cat.jpg", b"<html><script>alert(1)</script></html>")),
        ),
        Case("fits", 415, "unsupported_media_type", b"SIMPLE  =                    T" + b" " * 50),
        Case("psd", 415, "unsupported_media_type", b"8BPS\x00\x01" + b"\x00" * 40),
        Case("ico", 415, "unsupported_media_type", image_bytes("ICO", size=(32, 32))),
        Case("json-content-type", 415, "unsupported_media_type", JPEG, "application/json"),
        Case("text-content-type", 415, "unsupported_media_type", JPEG, "text/plain"),
        Case(
            "form-urlencoded",
            415,
            "unsupported_media_type",
            b"file=abc",
            "application/x-www-form-urlencoded",
        ),
        Case("topk-zero", 422, "invalid_parameter", JPEG, query="?topk=0"),
        Case("topk-huge", 422, "invalid_parameter", JPEG, query="?topk=99999999999999999999"),
        Case("topk-text", 422, "invalid_parameter", JPEG, query="?topk=%00"),
        Case("lang-unknown", 422, "invalid_parameter", JPEG, query="?lang=klingon"),
        Case("lang-empty", 422, "invalid_parameter", JPEG, query="?lang="),
        Case("get-predict", 405, "method_not_allowed", method="GET"),
        Case("put-predict", 405, "method_not_allowed", JPEG, method="PUT"),
        Case("unknown-route", 404, "not_found", JPEG, method="POST"),
        Case(
            "bad-bearer-without-keys",
            200,
            None,
            JPEG,
            headers={"Authorization": "Bearer ../../etc/passwd"},
        ),
        # Valid images carrying extra bytes are still valid images.
        Case("gif-js-polyglot", 200, None, fmts["GIF"] + b"\n/*/alert(1)/*/", "image/gif"),
        Case("jpeg-with-html", 200, None, JPEG + b"<html><script>alert(1)</script></html>"),
        Case("jpeg-with-zip", 200, None, JPEG + b"PK\x03\x04" + b"\x00" * 64),
        Case(
            "filename-unicode",
            200,
            None,
            content_type=None,
            files=multipart(("猫の写真 🐱.jpg", JPEG)),
        ),
        Case(
            "filename-traversal",
            200,
            None,
            content_type=None,
            files=multipart(("../../../etc/passwd", JPEG)),
        ),
        Case(
            "filename-very-long",
            200,
            None,
            content_type=None,
            files=multipart(("a" * 4000 + ".jpg", JPEG)),
        ),
        Case(
            "image-without-content-type",
            415,
            "unsupported_media_type",
            JPEG,
            "application/x-unknown",
        ),
        Case("mode-16-bit-png", 200, None, image_in_mode("I;16", "PNG"), "image/png"),
        Case("mode-cmyk-jpeg", 200, None, image_in_mode("CMYK", "JPEG")),
        Case("mode-1-bit-png", 200, None, image_in_mode("1", "PNG"), "image/png"),
        Case("one-pixel", 200, None, strip(1, 1), "image/png"),
    ]
