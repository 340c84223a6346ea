"""Specification of the streaming multipart reader and the media checks (no HTTP, no I/O)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from reelay_ingest.errors import MalformedRequestError, TooLargeError, UnsupportedMediaError
from reelay_ingest.formstream import MAX_FIELD_BYTES, MAX_FIELDS, FormField, FormFile, MultipartStream
from reelay_ingest.media import checked_stream, looks_like, video_content_type

BOUNDARY = "----reelayBoundary7"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def field(name: str, value: str) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def file(name: str, filename: str, data: bytes, ctype: str | None = "video/mp4") -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def read_all(stream: MultipartStream) -> list[tuple[str, str | bytes, int]]:
    """(name, value or file bytes, largest piece seen) for each part."""
    out: list[tuple[str, str | bytes, int]] = []
    async for part in stream.parts():
        if isinstance(part, FormField):
            out.append((part.name, part.value, 0))
        else:
            data, largest = b"", 0
            async for piece in part.chunks:
                data += piece
                largest = max(largest, len(piece))
            out.append((part.name, data, largest))
    return out


DATA = bytes(range(256)) * 400 + b"\r\n--not-the-boundary\r\n"


class TestMultipartStream:
    @pytest.mark.parametrize("piece_size", [1, 7, 4096, 1 << 20])
    async def test_reads_fields_and_file_exactly_whatever_the_piece_size(self, piece_size: int) -> None:
        body = field("account_id", "acme") + file("file", "a.mp4", DATA) + field("mode", "inbox") + END

        parts = await read_all(MultipartStream(CTYPE, pieces(body, piece_size)))

        assert [(n, v) for n, v, _ in parts] == [("account_id", "acme"), ("file", DATA), ("mode", "inbox")]

    async def test_hands_file_bytes_on_in_pieces_no_larger_than_what_arrived(self) -> None:
        body = field("mode", "inbox") + file("file", "a.mp4", DATA * 20) + END

        parts = await read_all(MultipartStream(CTYPE, pieces(body, 64 * 1024)))

        assert parts[1][2] <= 64 * 1024

    async def test_reports_file_name_and_declared_type(self) -> None:
        body = file("file", "clip.mov", b"xyz", "video/quicktime") + END

        async for part in MultipartStream(CTYPE, pieces(body, 100)).parts():
            assert isinstance(part, FormFile)
            assert (part.name, part.filename, part.content_type) == ("file", "clip.mov", "video/quicktime")
            async for _ in part.chunks:
                pass

    async def test_skips_a_file_left_unread_and_goes_on(self) -> None:
        body = file("file", "a.mp4", DATA) + field("mode", "inbox") + END
        seen = [part.name async for part in MultipartStream(CTYPE, pieces(body, 999)).parts()]

        assert seen == ["file", "mode"]

    async def test_a_body_without_its_closing_boundary_is_malformed(self) -> None:
        body = field("mode", "inbox") + file("file", "a.mp4", DATA)

        with pytest.raises(MalformedRequestError):
            await read_all(MultipartStream(CTYPE, pieces(body, 1000)))

    async def test_a_content_type_without_boundary_is_malformed(self) -> None:
        with pytest.raises(MalformedRequestError):
            MultipartStream("multipart/form-data", pieces(b"", 1))

    async def test_a_part_without_a_name_is_malformed(self) -> None:
        body = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode() + END

        with pytest.raises(MalformedRequestError):
            await read_all(MultipartStream(CTYPE, pieces(body, 10)))

    async def test_a_field_over_the_size_limit_is_refused_without_buffering_more(self) -> None:
        body = field("post_info", "x" * (MAX_FIELD_BYTES + 1)) + END

        with pytest.raises(TooLargeError):
            await read_all(MultipartStream(CTYPE, pieces(body, 4096)))

    async def test_too_many_fields_are_refused(self) -> None:
        body = b"".join(field(f"f{i}", "v") for i in range(MAX_FIELDS + 1)) + END

        with pytest.raises(MalformedRequestError):
            await read_all(MultipartStream(CTYPE, pieces(body, 4096)))

    async def test_a_field_that_is_not_utf8_is_malformed(self) -> None:
        body = field("mode", "x").replace(b"x", b"\xff\xfe") + END

        with pytest.raises(MalformedRequestError):
            await read_all(MultipartStream(CTYPE, pieces(body, 4096)))


class TestVideoContentType:
    @pytest.mark.parametrize(
        ("declared", "filename", "expected"),
        [
            ("video/mp4", "x.bin", "video/mp4"),
            ("Video/MP4; codecs=avc1", None, "video/mp4"),
            ("application/octet-stream", "x.MOV", "video/quicktime"),
            (None, "x.webm", "video/webm"),
            (None, "x.m4v", "video/mp4"),
        ],
    )
    def test_takes_the_declared_type_else_the_name(
        self, declared: str | None, filename: str | None, expected: str
    ) -> None:
        assert video_content_type(declared, filename) == expected

    @pytest.mark.parametrize(
        ("declared", "filename"),
        [
            ("image/png", "x.mp4"),
            ("application/octet-stream", "x.avi"),
            (None, None),
            ("video/x-msvideo", "x.avi"),
        ],
    )
    def test_refuses_everything_else(self, declared: str | None, filename: str | None) -> None:
        with pytest.raises(UnsupportedMediaError):
            video_content_type(declared, filename)


class TestMagicNumbers:
    def test_knows_mp4_mov_and_webm(self) -> None:
        assert looks_like("video/mp4", b"\x00\x00\x00\x20ftypisom")
        assert looks_like("video/quicktime", b"\x00\x00\x00\x08wide\x00\x00")
        assert looks_like("video/webm", b"\x1a\x45\xdf\xa3\x01\x00")
        assert not looks_like("video/webm", b"\x00\x00\x00\x20ftypisom")
        assert not looks_like("video/mp4", b"GIF89a\x00\x00\x00\x00")

    async def test_checked_stream_gives_back_every_byte_even_from_tiny_pieces(self) -> None:
        data = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)

        stream = await checked_stream(pieces(data, 3), "video/mp4")

        assert b"".join([p async for p in stream]) == data
