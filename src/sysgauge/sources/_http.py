"""The one way sysgauge makes an HTTP request: bounded in time and size, http(s) only, gzip aware."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
_CHUNK = 1 << 16


class FetchError(Exception):
    """Why a request gave nothing usable; the message never contains header values."""


@dataclass(frozen=True)
class Response:
    content_type: str
    body: bytes


def redact(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a redirect to ftp://; a scrape target must not send us anywhere but http(s).
    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError(f"refused redirect to a non-HTTP URL ({urllib.parse.urlsplit(newurl).scheme}:)")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            # urllib copies every header to the new URL; the user's (tokens) are meant for the
            # endpoint they named, not for wherever it redirects (or downgrades to plain http).
            new.headers = {k: v for k, v in new.headers.items() if k.lower() in _SAFE_ACROSS_ORIGINS}
        return new


_SAFE_ACROSS_ORIGINS = ("accept", "accept-encoding")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects())


def fetch(url: str, headers: Mapping[str, str], timeout: float, max_bytes: int) -> Response:
    request = urllib.request.Request(url, headers={"Accept": ACCEPT, "Accept-Encoding": "gzip", **headers})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = _read_capped(response, max_bytes, time.monotonic() + timeout)
            encoding = (response.headers.get("Content-Encoding") or "").lower()
            content_type = response.headers.get("Content-Type") or ""
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # urllib refuses redirects to file:, data: ... itself
            raise FetchError(f"refused redirect to a non-HTTP URL (HTTP {exc.code})") from None
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, FetchError):
            raise reason from None
        raise FetchError(f"cannot connect: {getattr(reason, 'strerror', None) or reason}") from None
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError(f"no answer within {timeout:g} s") from None
    except http.client.IncompleteRead as exc:
        raise FetchError(f"truncated response ({len(exc.partial)} bytes read)") from None
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    if encoding == "gzip":
        body = _gunzip_capped(body, max_bytes)
    return Response(content_type, body)


def _read_capped(response: Any, max_bytes: int, deadline: float) -> bytes:
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"response of {int(length)} bytes is larger than the {max_bytes} byte cap")
    chunks = []
    size = 0
    while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"response larger than the {max_bytes} byte cap")
        chunks.append(chunk)
        if time.monotonic() > deadline:  # a server trickling bytes must not hold the scraper forever
            raise FetchError("response not complete within the timeout")
    if length is not None and length.isdigit() and size < int(length):
        # http.client returns the short body when the server closes early; a cut scrape is no scrape.
        raise FetchError(f"truncated response ({size} of {int(length)} bytes)")
    return b"".join(chunks)


def _gunzip_capped(body: bytes, max_bytes: int) -> bytes:
    # A small gzip body can inflate without bound; stop at the cap.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError(f"bad gzip body: {exc}") from None
    if len(out) > max_bytes:
        raise FetchError(f"decompressed response larger than the {max_bytes} byte cap")
    return out


__all__ = ["ACCEPT", "FetchError", "Response", "fetch", "redact"]
