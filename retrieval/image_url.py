"""An image URL as a query (`--image https://...`, `--add https://...`): fetched with the bounds of an
upload to `jrsearch serve` (at most `MAX_QUERY_BYTES`, checked by its bytes to be an image), within
a time limit, on stdlib urllib; any failure is one `ImageUrlError` naming the URL and the reason."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from jrsearch.retrieval.diskspace import human_bytes
from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.request import is_url
from jrsearch.retrieval.sniff import HEAD_BYTES, Signature, sniff
from jrsearch.retrieval.types import MediaKind

MAX_QUERY_BYTES = 20 * 2**20  # an example image or sound given to search with: a URL's answer or an upload
FETCH_TIMEOUT_S = 15.0  # the whole answer, not each read
CHUNK = 64 * 1024


_PUBLIC_HOSTS_ONLY: ContextVar[bool] = ContextVar("jrsearch_public_hosts_only", default=False)


class ImageUrlError(QueryError):
    """An image URL that could not be used as a query."""


@contextmanager
def public_hosts_only() -> Iterator[None]:
    """Within this block an image URL is fetched, and each redirect followed, only where every address
    its host resolves to is public: `serve` runs a request's search in it, so a page cannot make the
    server reach its machine's or its network's private services. The name is resolved once, when
    connecting, and the connection made to an address that was checked (`_public_connection`): a
    DNS answer that changes between a check and the fetch (rebinding) cannot lead elsewhere. No
    proxy is used in the block (through one, the address reached could not be checked)."""
    token = _PUBLIC_HOSTS_ONLY.set(True)
    try:
        yield
    finally:
        _PUBLIC_HOSTS_ONLY.reset(token)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not is_url(newurl):
            raise urllib.error.URLError(f"it redirects to {newurl}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _PrivateAddress(OSError):
    """A connection `public_hosts_only` refused: its host resolves to an address that is not public."""


def _public_connection(address: tuple[str, int], timeout: object = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                       source_address: tuple[str, int] | None = None, **options: object) -> socket.socket:
    """`socket.create_connection` for `public_hosts_only`: the host resolved once, every address it
    has checked, and the connection made to those addresses (literal IPs: no second lookup)."""
    host, port = address
    try:
        found = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except UnicodeError as exc:
        raise OSError(f"cannot resolve {host} ({exc})") from None
    for ip in found:
        if not _is_public(ip):
            raise _PrivateAddress(f"{host} is a private or local address ({ip}), which the server does not fetch")
    error: OSError = OSError(f"{host} resolves to no address")
    for ip in dict.fromkeys(found):
        try:
            return socket.create_connection((ip, port), timeout, source_address)  # type: ignore[arg-type]
        except OSError as exc:
            error = exc
    raise error


def _public(connection_class: type[http.client.HTTPConnection]) -> Any:
    """`connection_class` (http or https: TLS still checks the certificate for the name) connecting
    through `_public_connection`, as the `http_class` a handler's `do_open` builds connections with."""
    def connection(host: str, **options: Any) -> http.client.HTTPConnection:
        made = connection_class(host, **options)
        made._create_connection = _public_connection  # type: ignore[attr-defined]
        return made

    return connection


class _PublicHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(_public(http.client.HTTPConnection), req)


class _PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(_public(http.client.HTTPSConnection), req, context=self._context)  # type: ignore[attr-defined]


def _opener() -> urllib.request.OpenerDirector:
    if _PUBLIC_HOSTS_ONLY.get():
        return urllib.request.build_opener(urllib.request.ProxyHandler({}), _PublicHTTPHandler, _PublicHTTPSHandler,
                                           _HttpOnlyRedirects)
    return urllib.request.build_opener(_HttpOnlyRedirects)


def fetch_image(url: str, *, max_bytes: int = MAX_QUERY_BYTES,
                timeout_s: float = FETCH_TIMEOUT_S) -> tuple[bytes, Signature]:
    """The bytes of the image at `url` and what they are; `ImageUrlError` when the URL is not
    http(s), the server cannot be reached or answers an error, the answer is over `max_bytes`,
    takes longer than `timeout_s` in all, or is not an image."""
    if not is_url(url):
        raise ImageUrlError(f"image URL {url}: only http:// and https:// URLs can be fetched")
    opener = _opener()
    request = urllib.request.Request(url, headers={"User-Agent": "jrsearch", "Accept": "image/*"})
    deadline = time.monotonic() + timeout_s
    try:
        with opener.open(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise _refused(url, f"the answer is {human_bytes(int(length))}, "
                                    f"over the limit of {human_bytes(max_bytes)}")
            data = bytearray()
            while chunk := response.read1(CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise _refused(url, f"the answer is over the limit of {human_bytes(max_bytes)}")
                if time.monotonic() > deadline:
                    raise TimeoutError
    except urllib.error.HTTPError as exc:
        raise _refused(url, f"the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, _PrivateAddress):
            raise _refused(url, str(reason)) from None
        if isinstance(reason, TimeoutError):
            raise _refused(url, f"no answer within {timeout_s:g} s") from None
        raise _refused(url, f"cannot fetch it ({reason})") from None
    except TimeoutError:
        raise _refused(url, f"the answer took longer than {timeout_s:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise _refused(url, f"cannot fetch it ({type(exc).__name__}: {exc})") from None
    if not data:
        raise _refused(url, "the answer is empty")
    signature = sniff(bytes(data[:HEAD_BYTES]))
    if signature is None or signature.kind != MediaKind.IMAGE:
        raise _refused(url, "the answer is not an image (JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC, AVIF)")
    return bytes(data), signature


def require_public_host(url: str) -> None:
    """`ImageUrlError` unless every address `url`'s host resolves to is a public one: an early answer
    (the API's 422 before anything is embedded). It is not what protects: the fetch in
    `public_hosts_only` checks the addresses it connects to (see there)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError) as exc:
        raise _refused(url, f"cannot resolve {host or 'its host'} ({exc})") from None
    for address in addresses:
        if not _is_public(address):
            raise _refused(url, f"{host} is a private or local address ({address}), which the server does not fetch")


def _is_public(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_global


@contextmanager
def fetched_image(url: str, *, max_bytes: int = MAX_QUERY_BYTES, timeout_s: float = FETCH_TIMEOUT_S) -> Iterator[Path]:
    """The image at `url` in a temporary file (named by what it holds), removed afterwards."""
    data, signature = fetch_image(url, max_bytes=max_bytes, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory(prefix="jrsearch-url-") as tmp:
        path = Path(tmp) / ("query" + signature.suffix)
        path.write_bytes(data)
        yield path


def _refused(url: str, reason: str) -> ImageUrlError:
    return ImageUrlError(f"image URL {url}: {reason}; give another URL or a local file")
