"""UrlVideoReader: size and type learning, ranged reads, manual redirects under the SSRF guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from reelay_common.adapters.url_reader import UrlVideoReader
from reelay_common.domain.errors import InvalidInputError, RetryableError

MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
VIDEO = MP4_HEAD + bytes(range(256)) * 800  # ~200 KB, a recognisable byte pattern
URL = "http://videos.test/v.mp4"

Handler = Callable[[httpx.Request], httpx.Response]


class Origin:
    """A fake video server: answers HEAD/GET for `data`, honouring Range unless told not to."""

    def __init__(
        self,
        data: bytes = VIDEO,
        *,
        content_type: str = "video/mp4",
        honour_range: bool = True,
        allow_head: bool = True,
        send_length: bool = True,
        truncate_to: int | None = None,
        cap_range: int | None = None,
    ) -> None:
        self.data = data
        self.content_type = content_type
        self.honour_range = honour_range
        self.allow_head = allow_head
        self.send_length = send_length
        self.truncate_to = truncate_to
        self.cap_range = cap_range  # answer at most this many bytes per ranged GET, as some servers do
        self.drops: list[int] = []  # the next GETs break off (a dropped connection) after these many bytes
        self.bytes_served = 0
        self.requests: list[httpx.Request] = []

    @property
    def gets(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"content-type": self.content_type}
        if request.method == "HEAD":
            if not self.allow_head:
                return httpx.Response(405)
            if self.send_length:
                headers["content-length"] = str(len(self.data))
            return httpx.Response(200, headers=headers)
        body = self.data
        status = 200
        range_header = request.headers.get("range")
        if range_header and self.honour_range and self.send_length:
            first_s, _, last_s = range_header.removeprefix("bytes=").partition("-")
            first = int(first_s)
            last = int(last_s) if last_s else len(self.data) - 1
            if self.cap_range is not None:
                last = min(last, first + self.cap_range - 1)
            body = self.data[first : last + 1]
            status = 206
            headers["content-range"] = f"bytes {first}-{last}/{len(self.data)}"
        if self.truncate_to is not None:
            body = body[: self.truncate_to]
        if self.send_length:
            headers["content-length"] = str(len(body))
        # Always a streamed body, as from a real socket (httpx pre-reads plain `bytes` content).
        drop_after = self.drops.pop(0) if self.drops else None
        return httpx.Response(status, headers=headers, content=self._chunked(body, drop_after, request))

    async def _chunked(
        self, data: bytes, drop_after: int | None, request: httpx.Request
    ) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 10_000):
            piece = data[i : i + 10_000]
            if drop_after is not None and i + len(piece) > drop_after:
                piece = piece[: drop_after - i]
                self.bytes_served += len(piece)
                yield piece
                raise httpx.ReadError("connection reset by peer", request=request)
            self.bytes_served += len(piece)
            yield piece


async def read_all(reader: UrlVideoReader, offset: int, length: int) -> bytes:
    return b"".join([piece async for piece in reader.stream(offset, length)])


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


class TestOpeningAUrlSource:
    async def test_learns_size_and_type_from_head(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert reader.size == len(VIDEO)
            assert reader.content_type == "video/mp4"
            assert not reader.spooled
        assert [r.method for r in origin.requests] == ["HEAD"]

    async def test_falls_back_to_get_headers_when_head_is_refused(self) -> None:
        origin = Origin(allow_head=False)
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert reader.size == len(VIDEO)
            assert not reader.spooled

    async def test_spools_to_disk_when_the_source_gives_no_length(self, tmp_path: Path) -> None:
        origin = Origin(send_length=False)
        async with client(origin) as http:
            reader = await UrlVideoReader.open(http, URL, allow_private=True, spool_dir=tmp_path)
            try:
                assert reader.spooled
                assert reader.size == len(VIDEO)
                spooled = list(tmp_path.iterdir())
                assert len(spooled) == 1
                assert spooled[0].stat().st_size == len(VIDEO)
                assert await read_all(reader, 1000, 50_000) == VIDEO[1000:51_000]
                gets_after_probe = len(origin.requests)
                await read_all(reader, 0, len(VIDEO))
                assert len(origin.requests) == gets_after_probe  # served from disk
            finally:
                await reader.aclose()
        assert list(tmp_path.iterdir()) == []

    async def test_refuses_a_spooled_source_over_the_limit_and_leaves_no_file(self, tmp_path: Path) -> None:
        async with client(Origin(send_length=False)) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(
                    http, URL, allow_private=True, spool_dir=tmp_path, max_bytes=100_000
                )
        assert err.value.code == "too_large"
        assert list(tmp_path.iterdir()) == []

    async def test_refuses_a_video_over_4_gb(self) -> None:
        def huge(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, headers={"content-type": "video/mp4", "content-length": str(5 * 2**30)}
            )

        async with client(huge) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.code == "too_large"

    async def test_infers_the_type_from_magic_bytes_when_the_server_says_octet_stream(self) -> None:
        async with (
            client(Origin(content_type="application/octet-stream")) as http,
            await UrlVideoReader.open(http, URL, allow_private=True) as reader,
        ):
            assert reader.content_type == "video/mp4"

    async def test_reads_an_octet_stream_opening_with_a_skip_atom_as_quicktime(self) -> None:
        # Ingest always took such files; the URL reader used to refuse them.
        data = b"\x00\x00\x00\x08skip" + VIDEO
        async with (
            client(Origin(data=data, content_type="application/octet-stream")) as http,
            await UrlVideoReader.open(http, URL, allow_private=True) as reader,
        ):
            assert reader.content_type == "video/quicktime"

    async def test_refuses_an_octet_stream_that_is_not_a_video(self) -> None:
        async with client(
            Origin(data=b"%PDF-1.7" + bytes(5000), content_type="application/octet-stream")
        ) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.code == "unsupported_media_type"

    async def test_refuses_a_content_type_that_is_not_a_video(self) -> None:
        async with client(Origin(content_type="text/html; charset=utf-8")) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.code == "unsupported_media_type"

    async def test_refuses_an_empty_source(self) -> None:
        async with client(Origin(data=b"")) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.code == "source_empty"

    @pytest.mark.parametrize("status", [404, 410])
    async def test_a_missing_video_is_permanent(self, status: int) -> None:
        async with client(lambda request: httpx.Response(status)) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.code == "source_not_found"

    @pytest.mark.parametrize("status", [500, 502, 503, 429])
    async def test_a_struggling_source_is_retryable(self, status: int) -> None:
        async with client(lambda request: httpx.Response(status)) as http:
            with pytest.raises(RetryableError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.http_status == status

    async def test_a_timeout_is_retryable(self) -> None:
        def slow(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        async with client(slow) as http:
            with pytest.raises(RetryableError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True)
        assert err.value.code == "source_unavailable"


class TestRedirects:
    async def test_follows_a_redirect_to_a_public_address(self) -> None:
        origin = Origin()

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "8.8.8.8":
                return httpx.Response(302, headers={"location": "http://8.8.4.4/real.mp4"})
            return origin(request)

        async with client(handler) as http, await UrlVideoReader.open(http, "http://8.8.8.8/v.mp4") as reader:
            assert reader.size == len(VIDEO)
            assert await read_all(reader, 10, 20) == VIDEO[10:30]
        assert {r.url.host for r in origin.requests} == {"8.8.4.4"}

    @pytest.mark.parametrize(
        "target",
        ["http://127.0.0.1:8080/v.mp4", "http://10.1.2.3/v.mp4", "http://169.254.169.254/latest/meta-data"],
    )
    async def test_refuses_a_redirect_to_a_private_address(self, target: str) -> None:
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(302, headers={"location": target})

        async with client(handler) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, "http://8.8.8.8/v.mp4")
        assert err.value.code == "url_not_public"
        assert seen == ["http://8.8.8.8/v.mp4"]  # the private target was never asked

    async def test_refuses_a_private_address_up_front(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return Origin()(request)

        async with client(handler) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, "http://127.0.0.1/v.mp4")
        assert err.value.code == "url_not_public"
        assert seen == []

    async def test_gives_up_after_too_many_hops(self) -> None:
        def loop(request: httpx.Request) -> httpx.Response:
            return httpx.Response(301, headers={"location": "/again"})

        async with client(loop) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, URL, allow_private=True, max_redirects=3)
        assert err.value.code == "too_many_redirects"


class TestStreamingARange:
    async def test_asks_for_the_range_and_yields_exactly_it(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_all(reader, 70_000, 30_001) == VIDEO[70_000:100_001]
        # From the offset on to the end: the chunks after this one read on from the same GET.
        assert origin.requests[-1].headers["range"] == "bytes=70000-"

    async def test_takes_a_content_range_written_in_capitals_with_extra_spaces(self) -> None:
        origin = Origin()

        def shouting(request: httpx.Request) -> httpx.Response:
            response = origin(request)
            if "content-range" in response.headers:
                spec = response.headers["content-range"].removeprefix("bytes ")
                response.headers["content-range"] = f"BYTES   {spec}"
            return response

        async with (
            client(shouting) as http,
            await UrlVideoReader.open(http, URL, allow_private=True) as reader,
        ):
            assert await read_all(reader, 70_000, 30_001) == VIDEO[70_000:100_001]

    async def test_skips_to_the_offset_when_the_server_ignores_range(self) -> None:
        origin = Origin(honour_range=False)
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_all(reader, 123_457, 50_000) == VIDEO[123_457:173_457]
            assert await read_all(reader, 0, len(VIDEO)) == VIDEO

    async def test_yields_pieces_no_larger_than_the_piece_size(self) -> None:
        async with (
            client(Origin(honour_range=False)) as http,
            await UrlVideoReader.open(http, URL, allow_private=True, piece_size=4096) as reader,
        ):
            sizes = [len(piece) async for piece in reader.stream(5000, 100_000)]
        assert max(sizes) <= 4096
        assert sum(sizes) == 100_000

    async def test_hands_out_the_pieces_as_they_arrive_when_they_fit(self) -> None:
        # Not re-cut (httpx's chunk_size would copy every byte twice to do so): the origin sends
        # 10,000-byte pieces, so a read from 5,000 is the rest of the first, then whole ones.
        async with (
            client(Origin(honour_range=False)) as http,
            await UrlVideoReader.open(http, URL, allow_private=True) as reader,
        ):
            sizes = [len(piece) async for piece in reader.stream(5000, 50_000)]
        assert sizes == [5000, 10_000, 10_000, 10_000, 10_000, 5000]

    async def test_a_source_that_ends_early_is_retryable(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            origin.truncate_to = 1000
            with pytest.raises(RetryableError) as err:
                await read_all(reader, 0, 50_000)
        assert err.value.code == "source_truncated"

    async def test_a_source_that_changed_size_is_permanent(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            origin.data = VIDEO + b"more"
            with pytest.raises(InvalidInputError) as err:
                await read_all(reader, 0, 100)
        assert err.value.code == "source_changed"

    async def test_refuses_a_range_outside_the_video(self) -> None:
        async with (
            client(Origin()) as http,
            await UrlVideoReader.open(http, URL, allow_private=True) as reader,
        ):
            with pytest.raises(ValueError, match="outside a file"):
                await read_all(reader, len(VIDEO) - 10, 11)


CHUNK = 30_000  # the reads below stand for an upload's chunks: sequential, each one `stream` call


async def read_in_chunks(reader: UrlVideoReader, start: int = 0) -> bytes:
    parts = []
    for offset in range(start, reader.size, CHUNK):
        parts.append(await read_all(reader, offset, min(CHUNK, reader.size - offset)))
    return b"".join(parts)


class TestOneDownloadPerUpload:
    async def test_a_whole_multi_chunk_upload_is_one_get(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_in_chunks(reader) == VIDEO
        assert len(VIDEO) // CHUNK >= 6
        assert [r.method for r in origin.requests] == ["HEAD", "GET"]
        assert origin.gets[0].headers["range"] == "bytes=0-"
        assert origin.bytes_served == len(VIDEO)

    @pytest.mark.parametrize(
        "origin",
        [
            Origin(allow_head=False),
            Origin(content_type="application/octet-stream"),
            Origin(allow_head=False, content_type="application/octet-stream", honour_range=False),
        ],
        ids=["head_refused", "sniffed", "head_refused_sniffed_no_range"],
    )
    async def test_the_probes_get_is_the_download(self, origin: Origin) -> None:
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert reader.content_type == "video/mp4"
            assert await read_in_chunks(reader) == VIDEO
        assert len(origin.gets) == 1
        assert origin.bytes_served == len(VIDEO)

    async def test_a_source_that_ignores_range_is_read_once(self) -> None:
        origin = Origin(honour_range=False)
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_in_chunks(reader) == VIDEO
        assert len(origin.gets) == 1
        assert origin.bytes_served == len(VIDEO)  # not once per chunk

    async def test_an_upload_resumed_midway_asks_for_the_rest_once(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_in_chunks(reader, start=3 * CHUNK) == VIDEO[3 * CHUNK :]
        assert [r.headers["range"] for r in origin.gets] == [f"bytes={3 * CHUNK}-"]

    async def test_a_resume_from_a_source_that_ignores_range_reads_from_its_start_once(self) -> None:
        origin = Origin(honour_range=False)
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_in_chunks(reader, start=3 * CHUNK) == VIDEO[3 * CHUNK :]
        assert len(origin.gets) == 1
        assert origin.bytes_served == len(VIDEO)

    async def test_a_retried_chunk_is_asked_for_by_range(self) -> None:
        origin = Origin()
        async with client(origin) as http, await UrlVideoReader.open(http, URL, allow_private=True) as reader:
            assert await read_all(reader, 0, CHUNK) == VIDEO[:CHUNK]
            # The PUT of the second chunk fails halfway: its consumer stops reading.
            pieces = reader.stream(CHUNK, CHUNK)
            await anext(pieces)
            del pieces  # abandoned, as httpx abandons the body of a PUT that failed
            assert await read_all(reader, CHUNK, CHUNK) == VIDEO[CHUNK : 2 * CHUNK]
            assert await read_all(reader, 2 * CHUNK, CHUNK) == VIDEO[2 * CHUNK : 3 * CHUNK]
        assert [r.headers["range"] for r in origin.gets] == ["bytes=0-", f"bytes={CHUNK}-"]


PIECE = 5000


class TestResumingAfterADrop:
    # Small pieces, so that the bytes before a drop have been handed out when it happens.
    async def test_a_dropped_connection_resumes_with_a_range_request(self) -> None:
        origin = Origin()
        origin.drops = [45_000]
        async with (
            client(origin) as http,
            await UrlVideoReader.open(http, URL, allow_private=True, piece_size=PIECE) as reader,
        ):
            assert await read_in_chunks(reader) == VIDEO
        assert [r.headers["range"] for r in origin.gets] == ["bytes=0-", "bytes=45000-"]
        assert origin.bytes_served == len(VIDEO)

    async def test_a_source_that_ignores_range_is_reread_from_its_start_once_per_drop(self) -> None:
        origin = Origin(honour_range=False)
        origin.drops = [45_000]
        async with (
            client(origin) as http,
            await UrlVideoReader.open(http, URL, allow_private=True, piece_size=PIECE) as reader,
        ):
            assert await read_in_chunks(reader) == VIDEO
        assert len(origin.gets) == 2
        assert origin.bytes_served == 45_000 + len(VIDEO)

    async def test_gives_up_after_repeated_drops_without_progress(self) -> None:
        origin = Origin()
        origin.drops = [0, 0, 0, 0, 0]
        async with (
            client(origin) as http,
            await UrlVideoReader.open(http, URL, allow_private=True, piece_size=PIECE) as reader,
        ):
            with pytest.raises(RetryableError) as err:
                await read_all(reader, 0, CHUNK)
        assert err.value.code == "source_unavailable"
        assert len(origin.gets) == 4  # the first try and three resumes

    async def test_a_server_that_caps_ranges_is_asked_for_the_rest(self) -> None:
        origin = Origin(cap_range=50_000)
        async with (
            client(origin) as http,
            await UrlVideoReader.open(http, URL, allow_private=True, piece_size=PIECE) as reader,
        ):
            assert await read_in_chunks(reader) == VIDEO
        assert [r.headers["range"] for r in origin.gets] == [
            f"bytes={first}-" for first in range(0, len(VIDEO), 50_000)
        ]

    async def test_a_resume_that_finds_the_file_changed_is_permanent(self) -> None:
        origin = Origin()
        origin.drops = [45_000]
        async with (
            client(origin) as http,
            await UrlVideoReader.open(http, URL, allow_private=True, piece_size=PIECE) as reader,
        ):
            assert await read_all(reader, 0, CHUNK) == VIDEO[:CHUNK]
            origin.data = VIDEO + b"more"
            with pytest.raises(InvalidInputError) as err:
                await read_in_chunks(reader, start=CHUNK)
        assert err.value.code == "source_changed"
