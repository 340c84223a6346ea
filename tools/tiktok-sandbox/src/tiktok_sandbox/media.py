"""Sample MP4 files of any size, and the container probe the sandbox runs on uploaded media."""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypedDict, Unpack

_PIECE = 1 << 20  # bytes yielded at a time: memory stays flat whatever the total size
_U32_MAX = 0xFFFFFFFF
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_MOOV_MAX = 64 << 20  # a moov larger than this is not a plausible short video; refuse to load it


# ---------------------------------------------------------------- generation


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, bytes([version]) + flags.to_bytes(3, "big"), *payload)


def _moov(
    *, duration_ms: int, width: int, height: int, fps: int, samples: int, sample_size: int, offset: int
) -> bytes:
    media_timescale = fps * 1000
    mvhd = _full(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, duration_ms),
        struct.pack(">IH", 0x00010000, 0x0100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", 2),
    )  # fmt: skip
    tkhd = _full(
        b"tkhd", 0, 0x000003,
        struct.pack(">IIIII", 0, 0, 1, 0, duration_ms), bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )  # fmt: skip
    mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, media_timescale, samples * 1000, 0x55C4, 0))
    hdlr = _full(b"hdlr", 0, 0, struct.pack(">I4s", 0, b"vide"), bytes(12), b"VideoHandler\x00")
    vmhd = _full(b"vmhd", 0, 1, bytes(8))
    dinf = _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1)))
    avc1 = _box(
        b"avc1",
        bytes(6), struct.pack(">H", 1), bytes(16),
        struct.pack(">HHIIIH", width, height, 0x00480000, 0x00480000, 0, 1),
        bytes(32), struct.pack(">Hh", 0x0018, -1),
    )  # fmt: skip
    stbl = _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full(b"stts", 0, 0, struct.pack(">III", 1, samples, 1000)),
        _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, samples, 1)),
        _full(b"stsz", 0, 0, struct.pack(">II", sample_size, samples)),
        _full(b"stco", 0, 0, struct.pack(">II", 1, offset)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


def iter_sample_mp4(
    total_size: int,
    *,
    duration_s: float = 5.0,
    width: int = 1080,
    height: int = 1920,
    fps: int = 30,
    seed: int = 0,
) -> Iterator[bytes]:
    """Stream a structurally valid MP4 of exactly `total_size` bytes, in pieces of at most 1 MiB.

    ftyp, then moov (mvhd, one video trak with tkhd/mdhd/hdlr/stbl), then an mdat whose payload
    is filler derived from `seed` (so two samples of one size can differ). The payload is not a
    decodable H.264 stream: the sandbox, like TikTok's first checks, only reads the boxes.
    """
    if total_size < 0:
        raise ValueError("total_size must be >= 0")
    if fps < 1 or width < 1 or height < 1 or duration_s <= 0:
        raise ValueError("fps, width, height and duration_s must be positive")
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    samples = max(1, round(duration_s * fps))
    duration_ms = round(duration_s * 1000)
    probe = _moov(
        duration_ms=duration_ms, width=width, height=height, fps=fps, samples=samples, sample_size=0, offset=0
    )
    head_len = len(ftyp) + len(probe)
    mdat_header = 8 if total_size - head_len - 8 <= _U32_MAX - 8 else 16
    payload = total_size - head_len - mdat_header
    if payload < 0:
        raise ValueError(f"a sample MP4 needs at least {head_len + 8} bytes")
    moov = _moov(
        duration_ms=duration_ms,
        width=width,
        height=height,
        fps=fps,
        samples=samples,
        sample_size=payload // samples,
        offset=head_len + mdat_header,
    )
    yield ftyp + moov
    if mdat_header == 8:
        yield struct.pack(">I4s", payload + 8, b"mdat")
    else:
        yield struct.pack(">I4sQ", 1, b"mdat", payload + 16)
    block = (random.Random(seed).randbytes(1 << 16)) * (_PIECE >> 16)
    left = payload
    while left > 0:
        n = min(left, _PIECE)
        yield block if n == _PIECE else block[:n]
        left -= n


class SampleShape(TypedDict, total=False):
    """The optional keywords of `iter_sample_mp4`, which `write_sample_mp4` passes on."""

    duration_s: float
    width: int
    height: int
    fps: int
    seed: int


def write_sample_mp4(path: Path | str, total_size: int, **shape: Unpack[SampleShape]) -> Path:
    """Write `iter_sample_mp4(total_size, **shape)` to `path` and return the path."""
    out = Path(path)
    with out.open("wb") as f:
        for piece in iter_sample_mp4(total_size, **shape):
            f.write(piece)
    return out


# ---------------------------------------------------------------- probing


class MediaError(ValueError):
    """The file is not a container the sandbox can read (TikTok: file_format_check_failed)."""


@dataclass(frozen=True)
class MediaInfo:
    """What the sandbox needs from a container to run TikTok's media checks (§9)."""

    container: Literal["mp4", "mov", "webm"]
    duration_s: float | None
    width: int
    height: int
    fps: float | None


_TOP_LEVEL = {
    b"ftyp",
    b"moov",
    b"mdat",
    b"free",
    b"skip",
    b"wide",
    b"pnot",
    b"uuid",
    b"meta",
    b"moof",
    b"mfra",
}
_QUICKTIME_FIRST = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def probe_media(path: Path | str) -> MediaInfo:
    """Read the container structure of the file on disk, seeking over media data."""
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        magic = f.read(8)
        if magic[:4] == _EBML_MAGIC:
            return _probe_webm(f, size)
        if len(magic) == 8 and magic[4:8] in _TOP_LEVEL:
            return _probe_isobmff(f, size)
    raise MediaError("not an MP4, MOV or WebM container")


def _boxes(f: BinaryIO, start: int, end: int, *, top: bool = False) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in [start, end), validating sizes."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise MediaError("truncated box header")
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            raw = f.read(8)
            if len(raw) < 8:
                raise MediaError("truncated largesize")
            (size,) = struct.unpack(">Q", raw)
            header = 16
        elif size == 0 and top:
            size = end - pos  # "extends to the end of the file"
        if size < header or pos + size > end:
            raise MediaError(f"box {kind!r} at {pos} has an impossible size {size}")
        yield kind, pos + header, pos + size
        pos += size


def _child(f: BinaryIO, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _boxes(f, start, end):
        if k == kind:
            return s, e
    return None


def _read(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    return f.read(end - start)


def _timescale_duration(payload: bytes) -> tuple[int, int]:
    """(timescale, duration) of an mvhd or mdhd payload, versions 0 and 1."""
    try:
        if payload[0] == 1:
            return struct.unpack_from(">IQ", payload, 20)
        return struct.unpack_from(">II", payload, 12)
    except (struct.error, IndexError) as exc:
        raise MediaError("truncated mvhd/mdhd") from exc


def _probe_isobmff(f: BinaryIO, size: int) -> MediaInfo:
    top = list(_boxes(f, 0, size, top=True))
    kinds = [k for k, _, _ in top]
    container: Literal["mp4", "mov"] = "mp4"
    if kinds[0] == b"ftyp":
        brand = _read(f, top[0][1], min(top[0][2], top[0][1] + 4))
        container = "mov" if brand == b"qt  " else "mp4"
    elif kinds[0] in _QUICKTIME_FIRST:
        container = "mov"  # classic QuickTime files start without ftyp
    else:
        raise MediaError("first box is neither ftyp nor a QuickTime atom")
    if kinds.count(b"moov") != 1:
        raise MediaError("expected exactly one moov box")
    if b"mdat" not in kinds:
        raise MediaError("no mdat box")
    _, ms, me = top[kinds.index(b"moov")]
    if me - ms > _MOOV_MAX:
        raise MediaError("moov box too large")
    moov = io.BytesIO(_read(f, ms, me))
    n = me - ms
    mvhd = _child(moov, 0, n, b"mvhd")
    if mvhd is None:
        raise MediaError("no mvhd box")
    timescale, duration = _timescale_duration(_read(moov, *mvhd))
    if timescale == 0:
        raise MediaError("mvhd timescale is 0")
    for kind, ts, te in _boxes(moov, 0, n):
        if kind != b"trak":
            continue
        video = _video_track(moov, ts, te)
        if video is not None:
            width, height, fps = video
            return MediaInfo(
                container=container, duration_s=duration / timescale, width=width, height=height, fps=fps
            )
    raise MediaError("no video track")


def _video_track(f: BinaryIO, start: int, end: int) -> tuple[int, int, float | None] | None:
    mdia = _child(f, start, end, b"mdia")
    if mdia is None:
        return None
    hdlr = _child(f, *mdia, b"hdlr")
    if hdlr is None or _read(f, hdlr[0] + 8, hdlr[0] + 12) != b"vide":
        return None
    tkhd = _child(f, start, end, b"tkhd")
    if tkhd is None:
        raise MediaError("video track without tkhd")
    payload = _read(f, *tkhd)
    at = 88 if payload[:1] == b"\x01" else 76
    if len(payload) < at + 8:
        raise MediaError("truncated tkhd")
    width, height = (v >> 16 for v in struct.unpack_from(">II", payload, at))
    return width, height, _frame_rate(f, mdia)


def _frame_rate(f: BinaryIO, mdia: tuple[int, int]) -> float | None:
    """Samples per second from mdhd + stts; None when the track does not say."""
    mdhd = _child(f, *mdia, b"mdhd")
    minf = _child(f, *mdia, b"minf")
    stbl = _child(f, *minf, b"stbl") if minf else None
    stts = _child(f, *stbl, b"stts") if stbl else None
    if mdhd is None or stts is None:
        return None
    timescale, duration = _timescale_duration(_read(f, *mdhd))
    raw = _read(f, *stts)
    if len(raw) < 8:
        raise MediaError("truncated stts")
    (count,) = struct.unpack_from(">I", raw, 4)
    if len(raw) < 8 + 8 * count:
        raise MediaError("truncated stts")
    samples: int = sum(struct.unpack_from(">I", raw, 8 + 8 * i)[0] for i in range(count))
    if timescale == 0 or duration == 0 or samples == 0:
        return None
    return samples / (duration / timescale)


# WebM (Matroska/EBML) element ids, with their marker bits, as they appear on the wire.
_SEGMENT, _INFO, _TRACKS, _CLUSTER = 0x18538067, 0x1549A966, 0x1654AE6B, 0x1F43B675
_DOCTYPE, _TIMECODE_SCALE, _DURATION = 0x4282, 0x2AD7B1, 0x4489
_TRACK_ENTRY, _TRACK_TYPE, _VIDEO, _PIXEL_W, _PIXEL_H, _FRAME_RATE = 0xAE, 0x83, 0xE0, 0xB0, 0xBA, 0x2383E3


def _vint(f: BinaryIO, *, is_id: bool) -> tuple[int, int, bool]:
    """(value, encoded length, unknown-size flag) of an EBML variable-size integer."""
    first = f.read(1)
    if not first:
        raise MediaError("truncated EBML element")
    b0 = first[0]
    length = 1
    while length <= 8 and not b0 & (0x80 >> (length - 1)):
        length += 1
    if length > (4 if is_id else 8):
        raise MediaError("invalid EBML variable-size integer")
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        raise MediaError("truncated EBML element")
    raw = int.from_bytes(first + rest, "big")
    if is_id:
        return raw, length, False
    value = raw & ((1 << (7 * length)) - 1)
    return value, length, value == (1 << (7 * length)) - 1


def _elements(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
    """(id, payload start, payload end or None for unknown size) of each child in [start, end)."""
    pos = start
    while pos < end:
        f.seek(pos)
        eid, ilen, _ = _vint(f, is_id=True)
        size, slen, unknown = _vint(f, is_id=False)
        body = pos + ilen + slen
        if unknown:
            yield eid, body, None
            return  # an unknown-size child runs to the end of its parent: nothing follows it
        if body + size > end:
            raise MediaError("EBML element overruns its parent")
        yield eid, body, body + size
        pos = body + size


def _uint(f: BinaryIO, s: int, e: int) -> int:
    return int.from_bytes(_read(f, s, e), "big") if e - s <= 8 else 0


def _float(f: BinaryIO, s: int, e: int) -> float:
    raw = _read(f, s, e)
    if len(raw) == 4:
        return float(struct.unpack(">f", raw)[0])
    if len(raw) == 8:
        return float(struct.unpack(">d", raw)[0])
    raise MediaError("invalid EBML float")


def _probe_webm(f: BinaryIO, size: int) -> MediaInfo:
    top = _elements(f, 0, size)
    eid, hs, he = next(top)
    if he is None:
        raise MediaError("EBML header of unknown size")
    doctype = next((_read(f, s, e) for i, s, e in _elements(f, hs, he) if i == _DOCTYPE and e), b"")
    if doctype.rstrip(b"\x00") != b"webm":
        raise MediaError("EBML document is not WebM")
    segment = next(((s, e) for i, s, e in top if i == _SEGMENT), None)
    if segment is None:
        raise MediaError("no WebM segment")
    scale, duration, video = 1_000_000, None, None
    for eid, s, e in _elements(f, segment[0], segment[1] if segment[1] is not None else size):
        if e is None or eid == _CLUSTER:
            break  # media data from here on; Info and Tracks come first in practice
        if eid == _INFO:
            for cid, cs, ce in _elements(f, s, e):
                if ce is not None and cid == _TIMECODE_SCALE:
                    scale = _uint(f, cs, ce)
                elif ce is not None and cid == _DURATION:
                    duration = _float(f, cs, ce)
        elif eid == _TRACKS:
            video = video or _webm_video_track(f, s, e)
    if video is None:
        raise MediaError("no WebM video track")
    width, height, fps = video
    return MediaInfo(
        container="webm",
        duration_s=None if duration is None else duration * scale / 1e9,
        width=width,
        height=height,
        fps=fps,
    )


def _webm_video_track(f: BinaryIO, start: int, end: int) -> tuple[int, int, float | None] | None:
    for eid, s, e in _elements(f, start, end):
        if eid != _TRACK_ENTRY or e is None:
            continue
        kind, dims, fps = 0, None, None
        for cid, cs, ce in _elements(f, s, e):
            if ce is None:
                continue
            if cid == _TRACK_TYPE:
                kind = _uint(f, cs, ce)
            elif cid == _VIDEO:
                vals = {vid: (vs, ve) for vid, vs, ve in _elements(f, cs, ce) if ve is not None}
                if _PIXEL_W in vals and _PIXEL_H in vals:
                    dims = (_uint(f, *vals[_PIXEL_W]), _uint(f, *vals[_PIXEL_H]))
                if _FRAME_RATE in vals:
                    fps = _float(f, *vals[_FRAME_RATE])
        if kind == 1 and dims is not None:
            return dims[0], dims[1], fps
    return None
