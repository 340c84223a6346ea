"""Sample MP4 generation and the container probe (MP4, MOV, WebM) used for the media checks."""

from __future__ import annotations

import itertools
import struct
import tracemalloc
from pathlib import Path

import pytest
from tiktok_sandbox.media import MediaError, iter_sample_mp4, probe_media, write_sample_mp4


class TestSampleMp4:
    @pytest.mark.parametrize("size", [1000, 4_194_304, 50_000_123])
    def test_exact_size_and_probe_reads_it_back(self, tmp_path: Path, size: int) -> None:
        path = write_sample_mp4(tmp_path / "v.mp4", size, duration_s=12.5, width=720, height=1280, fps=25)
        assert path.stat().st_size == size
        info = probe_media(path)
        assert (info.container, info.duration_s, info.width, info.height) == ("mp4", 12.5, 720, 1280)
        assert info.fps == pytest.approx(25.0)

    def test_pieces_are_bounded(self) -> None:
        assert max(len(p) for p in iter_sample_mp4(10_000_000)) <= 1 << 20

    def test_4_gib_streams_without_memory_growth(self) -> None:
        size = 4 * 2**30 + 123
        tracemalloc.start()
        try:
            total = 0
            for piece in iter_sample_mp4(size):
                total += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == size
        assert peak < 8 * 2**20

    def test_files_over_4_gib_use_a_64_bit_mdat(self, tmp_path: Path) -> None:
        size = 2**32 + 10_000
        head = b"".join(itertools.islice(iter_sample_mp4(size), 2))
        assert head[-16:-8] == struct.pack(">I4s", 1, b"mdat")
        assert struct.unpack(">Q", head[-8:])[0] == size - len(head) + 16
        path = tmp_path / "big.mp4"
        with path.open("wb") as f:  # sparse: only the boxes are written
            f.write(head)
            f.truncate(size)
        assert probe_media(path).width == 1080

    def test_seed_changes_the_bytes_not_the_size(self) -> None:
        a = b"".join(iter_sample_mp4(100_000, seed=1))
        b = b"".join(iter_sample_mp4(100_000, seed=2))
        assert len(a) == len(b) == 100_000
        assert a != b

    def test_too_small_or_bad_arguments_are_refused(self) -> None:
        with pytest.raises(ValueError, match="at least"):
            list(iter_sample_mp4(100))
        with pytest.raises(ValueError, match="positive"):
            list(iter_sample_mp4(10_000, fps=0))


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _ebml(eid: int, payload: bytes) -> bytes:
    id_bytes = eid.to_bytes((eid.bit_length() + 7) // 8, "big")
    return (
        id_bytes + bytes([0x80 | len(payload)]) + payload
        if len(payload) < 127
        else id_bytes + (0x4000 | len(payload)).to_bytes(2, "big") + payload
    )


def _webm(
    *, width: int = 1080, height: int = 1920, duration_ms: float = 5000.0, doctype: bytes = b"webm"
) -> bytes:
    header = _ebml(0x1A45DFA3, _ebml(0x4282, doctype))
    info = _ebml(
        0x1549A966,
        _ebml(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + _ebml(0x4489, struct.pack(">d", duration_ms)),
    )
    video = _ebml(0xE0, _ebml(0xB0, width.to_bytes(2, "big")) + _ebml(0xBA, height.to_bytes(2, "big")))
    tracks = _ebml(0x1654AE6B, _ebml(0xAE, _ebml(0x83, b"\x01") + video))
    cluster = bytes.fromhex("1F43B675") + b"\x01\xff\xff\xff\xff\xff\xff\xff" + b"\x00" * 100  # unknown size
    segment_body = info + tracks + cluster
    return header + bytes.fromhex("18538067") + b"\x01\xff\xff\xff\xff\xff\xff\xff" + segment_body


class TestProbe:
    def test_webm(self, tmp_path: Path) -> None:
        (tmp_path / "v.webm").write_bytes(_webm(width=720, height=1280, duration_ms=61_000))
        info = probe_media(tmp_path / "v.webm")
        assert (info.container, info.width, info.height, info.duration_s) == ("webm", 720, 1280, 61.0)

    def test_matroska_that_is_not_webm_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "v.mkv").write_bytes(_webm(doctype=b"matroska"))
        with pytest.raises(MediaError):
            probe_media(tmp_path / "v.mkv")

    def test_quicktime_brand_is_mov(self, tmp_path: Path) -> None:
        data = bytearray(b"".join(iter_sample_mp4(10_000)))
        data[8:12] = b"qt  "
        (tmp_path / "v.mov").write_bytes(bytes(data))
        assert probe_media(tmp_path / "v.mov").container == "mov"

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x00" * 64,
            b"hello world, not a video",
            _box(b"ftyp", b"isom\x00\x00\x02\x00") + _box(b"mdat", b"\x00" * 32),  # no moov
            _box(b"ftyp", b"isom\x00\x00\x02\x00") + _box(b"moov", b"") + _box(b"mdat", b""),  # no mvhd
            _box(b"ftyp", b"isom") + struct.pack(">I4s", 4, b"moov"),  # impossible size
            b"".join(iter_sample_mp4(10_000))[:5_000],  # truncated
        ],
        ids=["empty", "zeros", "text", "no_moov", "empty_moov", "tiny_box", "truncated"],
    )
    def test_broken_containers_raise(self, tmp_path: Path, data: bytes) -> None:
        (tmp_path / "bad").write_bytes(data)
        with pytest.raises(MediaError):
            probe_media(tmp_path / "bad")
