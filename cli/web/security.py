"""Who may talk to the server: a bearer token off loopback, a Host check on it, bounded bodies.

- `TokenGuard`: requests carry `Authorization: Bearer TOKEN`, a `token` cookie (set by the
  page's login, or by a first visit with `?token=`), or a `token` query parameter; compared in
  constant time. The page itself and its static files are public so that it can ask for one.
- Without a token the server listens on loopback only, and refuses requests whose Host header
  is not a loopback name (a web page elsewhere cannot reach it through DNS rebinding).
- `BodyLimit`: request bodies over the limit get 413 before they are read into memory.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

from jrsearch.retrieval.diskspace import human_bytes
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.settings import TOKEN

COOKIE = "token"
TOKEN_ENV = TOKEN.name
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
PUBLIC_PATHS = {"/", "/favicon.ico", "/api/login"}
PUBLIC_PREFIX = "/static/"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_token(token_file: Path | None) -> str | None:
    """The token from --token-file, else from $JRSEARCH_TOKEN, else None."""
    if token_file is not None:
        try:
            token = token_file.expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise JrsearchError(f"cannot read token file {token_file}: {reason}") from None
        source = f"token file {token_file}"
    else:
        token = TOKEN.text().strip()
        source = f"${TOKEN_ENV}"
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise JrsearchError(f"{source} holds a token of {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())' > "
                            f"{token_file or 'FILE'}`)")
    return token


class TokenGuard:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def valid(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def presented(self, request: Request) -> tuple[str | None, bool]:
        """(the token the request carries, whether it came in the URL)."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip(), False
        if COOKIE in request.cookies:
            return request.cookies[COOKIE], False
        return request.query_params.get(COOKIE), True

    def set_cookie(self, response: Response) -> None:
        response.set_cookie(COOKIE, self._token.decode(), httponly=True, samesite="strict", path="/")

    def cookie_header(self) -> str:
        response = Response()
        self.set_cookie(response)
        return response.headers["set-cookie"]


def parse_host(header: str) -> str | None:
    """The host name of a Host header (`uri-host [":" port]`, RFC 9110 7.2), normalised; None when malformed.

    Parsed the way Django's `validate_host` and nginx read it: a user part (`127.0.0.1:80@evil.com`),
    a path, a bad port or a character outside a DNS name makes the header malformed. IP literals
    are compared in their canonical form (`[0:0::1]` is `::1`); one trailing dot is dropped.
    """
    try:
        parts = urlsplit("//" + header)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        return None
    if parts.netloc != header or "@" in header or not parts.hostname or header.endswith(":"):
        return None
    return _canonical(parts.hostname, bracketed=header.startswith("["))


def _canonical(name: str, bracketed: bool = False) -> str | None:
    name = name.lower()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if bracketed:
            return None  # `[...]` holds an IPv6 address or nothing
        name = name[:-1] if name.endswith(".") else name
        return name if _DNS_NAME.fullmatch(name) else None
    return address.compressed if bracketed == (address.version == 6) else None


_DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class AccessGuard:
    """ASGI middleware: the Host check, the token check, and headers every response gets."""

    def __init__(self, app, guard: TokenGuard | None, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.guard = guard
        self.hosts = {_canonical(h, ":" in h) or h for h in allowed_hosts} if allowed_hosts is not None else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.hosts is not None:
            host = parse_host(request.headers.get("host", ""))
            if host is None:  # as nginx and Django answer a Host header that is not `name[:port]`
                await JSONResponse({"detail": "malformed Host header: expected a host name or address and an "
                                              "optional port"}, status_code=400)(scope, receive, send)
                return
            if host not in self.hosts:
                await JSONResponse({"detail": "this server only answers requests addressed to a loopback host "
                                              f"name ({', '.join(sorted(self.hosts))})"},
                                   status_code=403)(scope, receive, send)
                return
        cookie = None
        if self.guard is not None:
            token, from_url = self.guard.presented(request)
            valid = self.guard.valid(token)
            path = request.url.path
            if not valid and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIX):
                await JSONResponse({"detail": "this server needs a token: send 'Authorization: Bearer TOKEN', "
                                              "or log in on the page"}, status_code=401,
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
            if valid and from_url:  # e.g. a link to the page with ?token=: the page's requests use the cookie
                cookie = self.guard.cookie_header()

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if cookie:
                    headers.append("Set-Cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` (by Content-Length, or as they stream)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large: at most {human_bytes(self.max_bytes)}"

    async def _refuse(self, scope, receive, send) -> None:
        await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)

