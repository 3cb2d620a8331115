"""Authenticated reverse proxy to a web server in a user's container (the "open" view).

The service signs the user in with its own cookie, then talks to the backend with the backend's
token, so the backend trusts (and skips its own XSRF check for) everything that comes from here.
Cross-site protection therefore happens in this module:

- POST, PUT, PATCH and DELETE pass labdeck's XSRF check (``self.check_xsrf_cookie()``);
- the backend may not set ``_xsrf`` (nor labdeck's or the hub's cookies), so the only ``_xsrf``
  cookie JupyterLab can read, and send back in ``X-XSRFToken``, is labdeck's;
- labdeck's and the hub's cookies and the client's ``Authorization`` never reach the backend;
- websocket upgrades are accepted from the same origin only.

One handler class serves both HTTP and websockets, because a route cannot tell an upgrade from a
GET. Subclass it together with the service's base handler, ProxyHandler first::

    class OpenHandler(ProxyHandler, BaseHandler):
        async def proxy_target(self):
            ...  # look up the session in self.path_kwargs, 404 unless it is the user's
            return ProxyTarget("http://10.0.0.5:49153", token)

MRO: OpenHandler, ProxyHandler, WebSocketHandler, BaseHandler, HubOAuthenticated, HubAuthenticated,
RequestHandler. ProxyHandler defines no ``check_xsrf_cookie``, ``xsrf_token``, ``write_error`` or
``get_current_user``, so the base handler's (HubOAuth's) apply; its ``prepare()`` awaits the base
handler's ``prepare()`` (sign-in) first. Bodies stream both ways at the slower side's pace.
"""

import asyncio
import re
from typing import NamedTuple
from urllib.parse import urlsplit

from tornado import httputil, iostream, web, websocket
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.log import app_log
from tornado.tcpclient import TCPClient

# meaningful for one connection only (RFC 9110 7.6.1); Expect is answered by our own server
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "expect"})
# set by the proxy, never taken from the client (X-Real-Ip and X-Scheme would override the others)
REPLACED = frozenset({"authorization", "cookie", "x-forwarded-for", "x-forwarded-proto",
                      "x-forwarded-host", "x-real-ip", "x-scheme"})
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                          "sec-websocket-protocol", "sec-websocket-accept"})
# the hub's cookies and XSRF cookies (besides the service's own HubOAuth cookie, see is_private_cookie)
PRIVATE_COOKIE = re.compile(r"(__Host-|__Secure-)?(jupyterhub-|_xsrf$)")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_SENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})  # "no code", "abnormal", "TLS": never on the wire
# how a backend that is down, slow or broken shows itself (timeouts and closed streams are OSErrors)
BACKEND_ERRORS = (OSError, httputil.HTTPInputError, httputil.HTTPOutputError, websocket.WebSocketError)


class ProxyTarget(NamedTuple):
    url: str  # backend origin, e.g. "http://127.0.0.1:49153"
    token: str  # sent to the backend as "Authorization: token <token>"


def end_to_end(headers: httputil.HTTPHeaders, drop=frozenset()) -> httputil.HTTPHeaders:
    """The headers that a proxy passes on: no hop-by-hop ones, nor those the Connection header names."""
    named = {n.strip().lower() for n in headers.get("Connection", "").split(",")}
    skip = HOP_BY_HOP | named | drop
    out = httputil.HTTPHeaders()
    for name, value in headers.get_all():
        if name.lower() not in skip:
            out.add(name, value)
    return out


def cookie_name(text: str) -> str:
    return text.split("=", 1)[0].strip()


def sendable_close(code, reason) -> tuple:
    return (code, reason) if code is not None and code not in NOT_SENDABLE_CLOSE_CODES else (None, None)


@web.stream_request_body
class ProxyHandler(websocket.WebSocketHandler):
    """Forwards any request under its route to ``proxy_target()``, path and query unchanged."""

    connect_timeout = 10.0
    response_timeout = 600.0  # until the backend starts answering (a large notebook save)
    max_request_body_size = 16 * 1024**3  # streamed, so a limit on size, not on memory
    max_message_size = 128 * 1024**2  # one websocket message is held whole
    ping_interval = 30.0  # keeps idle kernel websockets alive through other proxies

    _target = None
    _upstream: HTTP1Connection | None = None
    _upstream_error: Exception | None = None
    _ws_upstream: websocket.WebSocketClientConnection | None = None
    _pump = None

    async def proxy_target(self) -> ProxyTarget:
        """Where this request goes; raise HTTPError(404) unless the user may open it."""
        raise NotImplementedError

    def is_private_cookie(self, name: str) -> bool:
        """labdeck's and the hub's cookies: never sent to the backend, never set by it."""
        own = getattr(getattr(self, "hub_auth", None), "cookie_name", None)
        return bool(PRIVATE_COOKIE.match(name) or (own and name.startswith(own)))

    async def prepare(self):
        result = super().prepare()
        if result is not None:
            await result
        if self._finished:
            return
        self.request.connection.set_max_body_size(self.max_request_body_size)
        length = self.request.headers.get("Content-Length", "0")
        if length.isdigit() and int(length) > self.max_request_body_size:
            raise web.HTTPError(413, f"The request body is larger than {self.max_request_body_size} bytes")

    def compute_etag(self):
        return None  # the backend's validators, not ours

    # ---- HTTP ----

    @web.authenticated
    async def get(self, *args, **kwargs):
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._proxy_websocket(*args, **kwargs)
        else:
            await self._proxy_http()

    @web.authenticated
    async def _http(self, *args, **kwargs):
        await self._proxy_http()

    head = post = put = patch = delete = options = _http

    async def data_received(self, chunk: bytes):
        # called for each piece of a request body, after prepare() and before the method
        if self._upstream_error is not None:
            return
        try:
            upstream = await self._start_request()
            await upstream.write(chunk)  # the client sends no faster than the backend reads
        except Exception as e:  # reported by the method, which tornado calls once the body is in
            self._upstream_error = e

    async def _proxy_http(self):
        try:
            if self._upstream_error is not None:
                raise self._upstream_error
            upstream = await self._start_request()
            upstream.finish()
        except BACKEND_ERRORS as e:
            raise self._backend_down(e) from None
        response = _Response(self)
        try:
            await upstream.read_response(response)
        except (iostream.StreamClosedError, OSError):
            pass  # judged below
        finally:
            upstream.close()
        if not response.started:
            raise self._backend_down(None)
        if not response.complete:
            self.request.connection.close()  # a cut-off body must not look whole to the client

    async def _start_request(self) -> HTTP1Connection:
        """Connect to the backend and send the request line and headers, once per request."""
        if self._upstream is not None:
            return self._upstream
        if not self.current_user:  # data_received runs before the @authenticated method
            raise web.HTTPError(403)
        method = self.request.method
        if method in UNSAFE_METHODS:
            self.check_xsrf_cookie()
        elif method == "GET":
            self.xsrf_token  # noqa: B018 -- leaves labdeck's _xsrf cookie for the pages' scripts
        chunked = "chunked" in self.request.headers.get("Transfer-Encoding", "").lower()
        if chunked and method not in ("POST", "PUT", "PATCH"):  # tornado's client frames only these
            raise web.HTTPError(411, f"A {method} body needs a Content-Length")
        target = await self._proxy_target()
        url = urlsplit(target.url)
        headers = self._backend_headers(target)
        headers["Connection"] = "close"
        stream = await TCPClient().connect(url.hostname, url.port or 80, timeout=self.connect_timeout)
        params = HTTP1ConnectionParameters(header_timeout=self.response_timeout, max_body_size=2**62)
        self._upstream = HTTP1Connection(stream, True, params, target.url)
        self._upstream.write_headers(httputil.RequestStartLine(method, self.request.uri, "HTTP/1.1"), headers)
        return self._upstream

    def _backend_down(self, error: Exception | None) -> web.HTTPError:
        url = self._target.url if self._target else "?"
        app_log.warning("Proxy to %s failed: %s", url, error or "no answer")
        return web.HTTPError(502, "The server in the container is not answering; try again in a moment")

    async def _proxy_target(self) -> ProxyTarget:
        if self._target is None:
            self._target = await self.proxy_target()
        return self._target

    def _backend_headers(self, target: ProxyTarget, drop=frozenset()) -> httputil.HTTPHeaders:
        incoming = self.request.headers
        headers = end_to_end(incoming, REPLACED | drop)  # Host stays: the backend builds links with it
        cookies = [part.strip() for line in incoming.get_list("Cookie") for part in line.split(";")
                   if part.strip() and not self.is_private_cookie(cookie_name(part))]
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        headers["Authorization"] = f"token {target.token}"
        prior = incoming.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {self.request.remote_ip}" if prior else self.request.remote_ip
        headers["X-Forwarded-Proto"] = self.request.protocol
        headers["X-Forwarded-Host"] = self.request.host
        return headers

    # ---- websockets ----

    async def _proxy_websocket(self, *args, **kwargs):
        origin = self.request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != self.request.host.lower():
            raise web.HTTPError(403, "Websockets from other sites are refused")
        target = await self._proxy_target()
        asked = self.request.headers.get("Sec-WebSocket-Protocol", "")
        offered = [p.strip() for p in asked.split(",") if p.strip()]
        request = HTTPRequest(re.sub(r"^http", "ws", target.url) + self.request.uri,
                              headers=self._backend_headers(target, WS_HANDSHAKE),
                              connect_timeout=self.connect_timeout, request_timeout=self.response_timeout)
        try:
            # the backend first, so the client gets the subprotocol the backend chose
            self._ws_upstream = await websocket.websocket_connect(
                request, subprotocols=offered or None, ping_interval=self.ping_interval,
                max_message_size=self.max_message_size)
        except HTTPClientError as e:
            if e.code >= 599:
                raise self._backend_down(e) from None
            raise web.HTTPError(e.code, "The server in the container refused the websocket") from None
        except BACKEND_ERRORS as e:
            raise self._backend_down(e) from None
        try:
            await super().get(*args, **kwargs)  # handshake with the client; returns when it closes
        finally:
            self._ws_upstream.close()

    def select_subprotocol(self, subprotocols):
        chosen = self._ws_upstream.selected_subprotocol
        return chosen if chosen in subprotocols else None

    def open(self, *args, **kwargs):
        self._pump = asyncio.ensure_future(self._pump_from_backend())

    async def _pump_from_backend(self):
        upstream = self._ws_upstream
        while (message := await upstream.read_message()) is not None:
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except websocket.WebSocketClosedError:
                return
        self.close(*sendable_close(upstream.close_code, upstream.close_reason))

    async def on_message(self, message):
        try:
            await self._ws_upstream.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            self.close()

    def on_close(self):
        # the client went away: a websocket, or an HTTP request still being answered
        if self._ws_upstream is not None:
            self._ws_upstream.close(*sendable_close(self.close_code, self.close_reason))
        if self._upstream is not None:
            self._upstream.close()

    def on_connection_close(self):
        web.RequestHandler.on_connection_close(self)  # ends a streamed upload; WebSocketHandler skips it
        super().on_connection_close()


class _Response(httputil.HTTPMessageDelegate):
    """Copies the backend's answer to the client as it arrives, at the client's pace."""

    def __init__(self, handler: ProxyHandler):
        self.handler = handler
        self.started = self.complete = False

    def headers_received(self, start_line, headers):
        if start_line.code < 200:
            return  # an interim answer (100 Continue); the real one follows
        handler = self.handler
        handler.set_status(start_line.code, start_line.reason or None)
        for name in ("Content-Type", "Server"):
            handler.clear_header(name)
        for name, value in end_to_end(headers).get_all():
            if name.lower() == "set-cookie" and handler.is_private_cookie(cookie_name(value)):
                continue
            handler.add_header(name, value)
        self.started = True

    async def data_received(self, chunk):
        self.handler.write(chunk)
        try:
            await self.handler.flush()
        except iostream.StreamClosedError:
            self.handler.on_close()

    def finish(self):
        self.complete = True
