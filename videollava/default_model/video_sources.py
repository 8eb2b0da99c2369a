"""Media given as URLs: `data:` URLs and `http(s)://` URLs, read into memory with a size cap and a timeout.

`fetch_source` turns such a URL into an in-memory file (`io.BytesIO` whose `name` is a short description of the
source, so decode errors name it without the payload) and leaves every other source unchanged; `load_video` and
`LanguageBindImageProcessor` call it on their inputs. `describe_source` is that short description: the media type
and size of a `data:` URL, never its payload. Uploaded as Hub custom code: imports only installed libraries.
"""

import base64
import binascii
import io
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError


logger = logging.getLogger(__name__)

MAX_BYTES = 256 * 2**20  # cap on one medium read from a URL; env VIDEOLLAVA_MAX_MEDIA_BYTES overrides it
TIMEOUT_S = 30.0  # whole download of one http(s) URL; env VIDEOLLAVA_MEDIA_TIMEOUT overrides it
_CHUNK = 1 << 20
_URL_SHOWN = 120  # characters of an http(s) URL kept in messages


class MediaSourceError(ValueError):
    """A URL could not be read; `source` is its short description, `reason` what went wrong."""

    def __init__(self, source: str, reason: str):
        self.source = describe_source(source)
        self.reason = reason
        super().__init__(f"Cannot read {self.source}: {reason}")


def is_url(source: Any) -> bool:
    """A `data:` or `http(s)://` URL (a string); anything else is a path, bytes, a file object or frames."""
    return isinstance(source, str) and source[:8].lower().startswith(("data:", "http://", "https://"))


def describe_source(source: Any) -> str:
    """A short name for messages: `data:video/mp4;base64 (12.3 kB)`, a URL cut to 120 characters, or a path."""
    if isinstance(source, str) and source[:5].lower() == "data:":
        header, comma, payload = source.partition(",")
        size = len(payload) * 3 // 4 if header.lower().endswith(";base64") else len(payload)
        return f"{header[:60] or 'data:'} ({_human(size)})" if comma else f"{source[:40]}... (no comma)"
    if isinstance(source, str):
        return source if len(source) <= _URL_SHOWN else source[:_URL_SHOWN] + "..."
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    return f"<{type(source).__name__}>"


def _human(size: int) -> str:
    return f"{size} B" if size < 1000 else f"{size / 1e3:.1f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def _limits(max_bytes: int | None, timeout: float | None) -> tuple[int, float]:
    max_bytes = max_bytes if max_bytes is not None else int(os.environ.get("VIDEOLLAVA_MAX_MEDIA_BYTES", MAX_BYTES))
    timeout = timeout if timeout is not None else float(os.environ.get("VIDEOLLAVA_MEDIA_TIMEOUT", TIMEOUT_S))
    return max_bytes, timeout


def _data_url(url: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise MediaSourceError(url, "malformed data: URL (no ',' before the payload)")
    if header.lower().endswith(";base64"):
        if len(payload) * 3 // 4 > max_bytes:
            raise MediaSourceError(url, f"payload is over the {_human(max_bytes)} cap")
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as err:
            raise MediaSourceError(url, f"invalid base64 payload ({err})") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise MediaSourceError(url, f"payload is {_human(len(data))}, over the {_human(max_bytes)} cap")
    if not data:
        raise MediaSourceError(url, "empty payload")
    return data


def _http_url(url: str, max_bytes: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "videollava"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise MediaSourceError(url, f"{_human(int(length))}, over the {_human(max_bytes)} cap")
            chunks, size = [], 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise MediaSourceError(url, f"more than the {_human(max_bytes)} cap")
                if time.monotonic() > deadline:
                    raise MediaSourceError(url, f"download took longer than {timeout:g} s")
                chunks.append(chunk)
    except MediaSourceError:
        raise
    except urllib.error.HTTPError as err:
        raise MediaSourceError(url, f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise MediaSourceError(url, f"no answer within {timeout:g} s") from None
        raise MediaSourceError(url, f"cannot connect ({reason})") from None
    except (socket.timeout, TimeoutError):
        raise MediaSourceError(url, f"no answer within {timeout:g} s") from None
    except (OSError, ValueError) as err:  # http.client errors, malformed URLs
        raise MediaSourceError(url, f"{type(err).__name__}: {err}") from None
    if size == 0:
        raise MediaSourceError(url, "empty response")
    return b"".join(chunks)


def fetch_bytes(url: str, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
    """The bytes behind a `data:` or `http(s)://` URL, at most `max_bytes` (default 256 MiB), within `timeout` s.

    Raises:
        `MediaSourceError` (a `ValueError`) naming the source briefly: malformed URL, bad base64, HTTP error,
        unreachable host, timeout, empty or oversized payload.
    """
    max_bytes, timeout = _limits(max_bytes, timeout)
    if url[:5].lower() == "data:":
        return _data_url(url, max_bytes)
    return _http_url(url, max_bytes, timeout)


def fetch_source(source: Any, error: type | None = None, **limits) -> Any:
    """`data:` / `http(s)://` URLs -> an in-memory file named after the source; anything else unchanged.

    `error` (a class taking `(source, reason)`) replaces `MediaSourceError` for callers with their own error type.
    """
    if not is_url(source):
        return source
    try:
        data = fetch_bytes(source, **limits)
    except MediaSourceError as err:
        if error is None:
            raise
        raise error(err.source, err.reason) from None
    logger.debug("Read %s (%d bytes).", describe_source(source), len(data))
    buffer = io.BytesIO(data)
    buffer.name = describe_source(source)
    return buffer


def load_image_source(source: Any, **limits) -> Image.Image:
    """A loaded PIL image from a path, a `data:` / `http(s)://` URL or a PIL image (EXIF orientation applied, mode
    kept: `LanguageBindImageProcessor` converts any mode to RGB).

    Raises:
        `MediaSourceError` (a `ValueError`) naming the source briefly.
    """
    if isinstance(source, Image.Image):
        return source
    opened = fetch_source(source, **limits)
    if isinstance(opened, (str, os.PathLike)) and not os.path.isfile(opened):
        raise MediaSourceError(os.fspath(opened), "file not found (give a path, a data: URL or an http(s) URL)")
    try:
        with Image.open(opened) as image:
            return ImageOps.exif_transpose(image)  # a loaded copy
    except UnidentifiedImageError:
        raise MediaSourceError(source, "not an image (unknown format)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise MediaSourceError(source, f"{type(err).__name__}: {err}") from None


__all__ = ["MAX_BYTES", "TIMEOUT_S", "MediaSourceError", "describe_source", "fetch_bytes", "fetch_source",
           "is_url", "load_image_source"]
