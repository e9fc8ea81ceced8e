"""Downloading a feed with httpx, carefully: a feed server is just another party on the
internet, and a bad answer must cost nothing but a line in the feed's error.

Conditional requests (ETag / If-Modified-Since, 304), a connect and read timeout plus an
overall deadline (a server that drips one byte a second defeats a read timeout alone), a
size cap checked while reading (also after gzip decoding), redirects followed by hand so
they are bounded, loop-checked, never downgrade https to http and never carry a feed's
key to another host. TLS is verified (httpx's default, kept).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

import httpx

from .. import __version__

REDIRECTS = (301, 302, 303, 307, 308)
# Content types a feed is never served as: an HTML page is a login wall, an error page or
# a captive portal; archives and media are not feed text.
REFUSED_TYPES = ("text/html", "application/xhtml+xml", "application/zip", "application/gzip",
                 "application/x-gzip", "application/x-tar", "application/pdf")
REFUSED_PREFIXES = ("image/", "audio/", "video/", "font/")
USER_AGENT = f"stockade/{__version__} (threat feed sync)"


class FetchError(Exception):
    """The download failed; the message is one line and names no secret."""


@dataclass(slots=True)
class FetchResult:
    status: str  # "ok" | "not_modified"
    body: bytes = b""
    etag: str = ""
    last_modified: str = ""
    content_type: str = ""
    url: str = ""  # after redirects


def content_type_problem(content_type: str) -> str:
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in REFUSED_TYPES or mime.startswith(REFUSED_PREFIXES):
        return f"unexpected content type {mime} (not feed text)"
    return ""


async def fetch(url: str, *, etag: str = "", last_modified: str = "", max_bytes: int = 64 << 20,
                timeout: float = 30.0, deadline: float = 180.0, max_redirects: int = 5,
                auth_headers: Callable[[str], dict[str, str]] | None = None,
                verify: bool | str = True) -> FetchResult:
    """GET url; FetchError with a one-line reason on anything but a usable answer."""
    try:
        return await asyncio.wait_for(
            _fetch(url, etag, last_modified, max_bytes, timeout, max_redirects, auth_headers, verify), deadline)
    except asyncio.TimeoutError:
        raise FetchError(f"download did not finish within {deadline:g} s") from None


async def _fetch(url: str, etag: str, last_modified: str, max_bytes: int, timeout: float,
                 max_redirects: int, auth_headers: Callable[[str], dict[str, str]] | None,
                 verify: bool | str) -> FetchResult:
    conditional: dict[str, str] = {}
    if etag:
        conditional["If-None-Match"] = etag
    if last_modified:
        conditional["If-Modified-Since"] = last_modified
    seen: set[str] = set()
    current = url
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                 follow_redirects=False, verify=verify,
                                 headers={"User-Agent": USER_AGENT}) as client:
        for _ in range(max_redirects + 1):
            if current in seen:
                raise FetchError(f"redirect loop at {_short(current)}")
            seen.add(current)
            headers = dict(conditional)
            if auth_headers is not None:
                headers.update(auth_headers(current))
            try:
                async with client.stream("GET", current, headers=headers) as response:
                    if response.status_code in REDIRECTS:
                        current = _next_hop(response, current)
                        continue
                    return await _read(response, conditional, max_bytes)
            except httpx.TimeoutException:
                raise FetchError(f"timed out after {timeout:g} s ({_short(current)})") from None
            except httpx.RemoteProtocolError as e:
                raise FetchError(f"truncated or broken response: {_one_line(e)}") from None
            except httpx.ConnectError as e:
                raise FetchError(f"cannot connect: {_one_line(e)}") from None
            except httpx.UnsupportedProtocol:
                raise FetchError(f"unsupported URL scheme in {_short(current)}") from None
            except httpx.HTTPError as e:
                raise FetchError(f"download failed: {_one_line(e)}") from None
    raise FetchError(f"more than {max_redirects} redirects")


def _next_hop(response: httpx.Response, current: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise FetchError(f"HTTP {response.status_code} redirect without a Location")
    try:
        target = response.url.join(location)
    except (httpx.InvalidURL, ValueError):
        raise FetchError("redirect to an unusable URL") from None
    if target.scheme not in ("http", "https"):
        raise FetchError(f"redirect to a {target.scheme} URL refused")
    if response.url.scheme == "https" and target.scheme == "http":
        raise FetchError("redirect from https to plain http refused")
    return str(target)


async def _read(response: httpx.Response, conditional: dict[str, str], max_bytes: int) -> FetchResult:
    result = FetchResult(status="ok", etag=response.headers.get("etag", ""),
                         last_modified=response.headers.get("last-modified", ""),
                         content_type=response.headers.get("content-type", ""), url=str(response.url))
    if response.status_code == 304:
        if not conditional:
            raise FetchError("HTTP 304 to a request that was not conditional")
        result.status = "not_modified"
        return result
    if response.status_code != 200:
        raise FetchError(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
    problem = content_type_problem(result.content_type)
    if problem:
        raise FetchError(problem)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes and "content-encoding" not in response.headers:
        raise FetchError(f"body of {int(declared)} bytes is over the {max_bytes}-byte cap")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():  # decoded: the cap also holds for gzip bombs
        total += len(chunk)
        if total > max_bytes:
            raise FetchError(f"body is over the {max_bytes}-byte cap")
        chunks.append(chunk)
    result.body = b"".join(chunks)
    return result


def _short(url: str) -> str:
    """A URL for messages: no query string (where keys and tokens tend to live)."""
    return url.split("?", 1)[0][:200]


def _one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
