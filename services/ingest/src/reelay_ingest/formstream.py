"""Reads a multipart/form-data body part by part as it arrives: a file's bytes are handed on in
the pieces the client sent them, never gathered in memory or spooled to disk."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from reelay_ingest.errors import MalformedRequestError, TooLargeError

MAX_FIELD_BYTES = 64 * 1024  # post_info with a 2200-unit title fits many times over
MAX_FIELDS = 32
MAX_HEADER_BYTES = 8 * 1024


@dataclass(frozen=True)
class FormField:
    """A plain form field, decoded as UTF-8."""

    name: str
    value: str


@dataclass(frozen=True)
class FormFile:
    """A file part. Read `chunks` before asking for the next part (what is left is skipped)."""

    name: str
    filename: str | None
    content_type: str | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class _FieldDone:
    name: str
    value: bytes


@dataclass(frozen=True)
class _FileBegin:
    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class _FileData:
    data: bytes


class _FileEnd:
    pass


_Event = _FieldDone | _FileBegin | _FileData | _FileEnd


def _malformed(message: str) -> MalformedRequestError:
    return MalformedRequestError(message, code="malformed_multipart")


class MultipartStream:
    """Turns a multipart body (an async iterator of bytes) into FormField / FormFile parts."""

    def __init__(self, content_type: str, body: AsyncIterator[bytes]) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise _malformed("the multipart Content-Type has no boundary")
        self._body = body
        self._events: deque[_Event] = deque()
        self._finished = False
        self._ended = False
        self._in_file = False
        self._fields = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field_name: str | None = None
        self._field_data = bytearray()
        self._file_open = False
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except (FormParserError, ValueError) as exc:
            raise _malformed("the multipart boundary is invalid") from exc

    # -- parser callbacks: they only queue events; all awaiting happens in _next_event --------
    def _on_part_begin(self) -> None:
        self._headers = {}
        self._field_name = None
        self._field_data = bytearray()
        self._file_open = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        if len(self._header_name) > MAX_HEADER_BYTES:
            raise _malformed("a multipart header is too long")

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_HEADER_BYTES:
            raise _malformed("a multipart header is too long")

    def _on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise _malformed("a multipart part has no Content-Disposition")
        _, options = parse_options_header(disposition)
        raw_name = options.get(b"name")
        if raw_name is None:
            raise _malformed("a multipart part has no name")
        name = raw_name.decode("utf-8", errors="replace")
        if b"filename" in options:
            raw_type = self._headers.get(b"content-type")
            self._file_open = True
            self._events.append(
                _FileBegin(
                    name=name,
                    filename=options[b"filename"].decode("utf-8", errors="replace") or None,
                    content_type=raw_type.decode("latin-1") if raw_type else None,
                )
            )
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise _malformed(f"too many form fields (at most {MAX_FIELDS})")
            self._field_name = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file_open:
            self._events.append(_FileData(data[start:end]))
            return
        self._field_data += data[start:end]
        if len(self._field_data) > MAX_FIELD_BYTES:
            raise TooLargeError(
                f"form field {self._field_name!r} is longer than {MAX_FIELD_BYTES} bytes",
                code="field_too_large",
            )

    def _on_part_end(self) -> None:
        if self._file_open:
            self._events.append(_FileEnd())
            self._file_open = False
        elif self._field_name is not None:
            self._events.append(_FieldDone(self._field_name, bytes(self._field_data)))

    def _on_end(self) -> None:
        self._ended = True

    # -- pulling --------------------------------------------------------------------------------
    async def _next_event(self) -> _Event | None:
        while not self._events:
            if self._finished:
                return None
            chunk = await anext(self._body, None)
            try:
                if chunk is None:
                    self._finished = True
                    self._parser.finalize()
                    if not self._ended:
                        raise _malformed("the multipart body ended before its closing boundary")
                elif chunk:
                    self._parser.write(chunk)
            except FormParserError as exc:
                raise _malformed("the multipart body is malformed") from exc
        return self._events.popleft()

    async def _file_chunks(self) -> AsyncIterator[bytes]:
        while self._in_file:
            event = await self._next_event()
            if isinstance(event, _FileData):
                if event.data:
                    yield event.data
            elif isinstance(event, _FileEnd):
                self._in_file = False
            else:  # the parser always closes a part before the next one or the end
                raise _malformed("the multipart body ended inside a file")

    async def parts(self) -> AsyncIterator[FormField | FormFile]:
        """Yield each part in order; a FormFile's bytes must be read before the next part comes."""
        while True:
            if self._in_file:  # the consumer left a file unread: skip the rest of it
                async for _ in self._file_chunks():
                    pass
            event = await self._next_event()
            if event is None:
                return
            if isinstance(event, _FieldDone):
                try:
                    value = event.value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _malformed(f"form field {event.name!r} is not UTF-8") from exc
                yield FormField(event.name, value)
            elif isinstance(event, _FileBegin):
                self._in_file = True
                yield FormFile(event.name, event.filename, event.content_type, self._file_chunks())
            else:
                raise _malformed("the multipart body is out of order")
