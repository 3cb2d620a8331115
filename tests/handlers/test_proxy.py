"""The browser view's reverse proxy (handlers/proxy.py), in-process against a real tornado backend.

The backend stands in for the container's Jupyter server: it is served at the same public path
(its base_url) and answers with what it received. The proxy app is a subclass of ProxyHandler
composed with a small base handler shaped like labdeck's (an async prepare() that signs the user
in from the service's cookie), with tornado's own XSRF check.
"""

import asyncio
import hashlib
import json
import tracemalloc
from contextlib import asynccontextmanager, contextmanager
from http.cookies import SimpleCookie
from types import SimpleNamespace

import pytest
from tornado import web, websocket
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from handlers.proxy import ProxyHandler, ProxyTarget

pytestmark = pytest.mark.asyncio(loop_scope="session")

MiB = 1024 * 1024
BIG_CHUNKS = 50  # the large download and upload: 50 chunks of 1 MiB
PREFIX = "/services/labdeck/debug/s1/open/"
BACKEND_TOKEN = "backend-secret"
KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
BODY_LIMIT = 64 * MiB


def big_chunk(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (MiB // 32)


BIG_SHA256 = hashlib.sha256(b"".join(big_chunk(i) for i in range(BIG_CHUNKS))).hexdigest()


# ---- the backend ----

class Echo(web.RequestHandler):
    def initialize(self, state):
        self.state = state

    def prepare(self):
        self.state.seen.append(self.request.method)

    def _echo(self, *args):
        self.write({"method": self.request.method, "path": self.request.path, "query": self.request.query,
                    "body": self.request.body.decode(), "cookies": sorted(self.request.cookies),
                    "headers": {k.lower(): v for k, v in self.request.headers.get_all()}})

    get = post = put = patch = delete = options = _echo

    def head(self):
        self.set_header("X-Method", "HEAD")


class Big(web.RequestHandler):
    def initialize(self, state):
        self.state = state

    async def get(self):
        for i in range(BIG_CHUNKS):
            self.write(big_chunk(i))
            await self.flush()
            self.state.big_sent += MiB
            if i == 3 and self.get_argument("cut", None):
                self.request.connection.close()  # the backend dies mid-download
                return


@web.stream_request_body
class Upload(web.RequestHandler):
    def prepare(self):
        self.size, self.sha = 0, hashlib.sha256()

    def data_received(self, chunk):
        self.size += len(chunk)
        self.sha.update(chunk)

    def put(self):
        self.write({"size": self.size, "sha256": self.sha.hexdigest()})


class Cookies(web.RequestHandler):
    def get(self):
        self.set_cookie("_xsrf", "backend-xsrf")
        self.set_cookie("service-labdeck", "forged", path="/services/labdeck/")
        self.set_cookie("backend_session", "b1")


class Redirect(web.RequestHandler):
    def get(self):
        self.redirect(PREFIX + "echo?from=redirect")


class WsEcho(websocket.WebSocketHandler):
    def initialize(self, state):
        self.state = state

    def check_origin(self, origin):
        return True  # like jupyter_server for token-authenticated requests: the proxy must check

    def select_subprotocol(self, subprotocols):
        return KERNEL_PROTOCOL if KERNEL_PROTOCOL in subprotocols else None

    def open(self):
        self.state.ws_opened += 1

    def on_message(self, message):
        if message == "headers":
            self.write_message({"authorization": self.request.headers.get("Authorization"),
                                "cookies": sorted(self.request.cookies)})
        elif message == "close":
            self.close(4001, "bye")
        else:
            self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        self.state.ws_closed.set_result(self.close_code)


# ---- the proxy ----

class ServiceBase(web.RequestHandler):
    """Shaped like labdeck's BaseHandler: async sign-in in prepare(), HubOAuth's cookie name."""

    hub_auth = SimpleNamespace(cookie_name="service-labdeck")

    async def prepare(self):
        await asyncio.sleep(0)
        self.current_user = self.get_cookie("service-labdeck")


class OpenHandler(ProxyHandler, ServiceBase):
    max_request_body_size = BODY_LIMIT

    def initialize(self, targets):
        self.targets = targets

    async def proxy_target(self):
        if self.path_kwargs["session_id"] not in self.targets:
            raise web.HTTPError(404, "No such debug session")
        return self.targets[self.path_kwargs["session_id"]]


@asynccontextmanager
async def served(app):
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield port
    finally:
        server.stop()
        await server.close_all_connections()


@contextmanager
def memory_growth():
    """Bytes allocated by this whole process (backend, proxy and client) while the block runs."""
    growth = SimpleNamespace()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        yield growth
        current, peak = tracemalloc.get_traced_memory()
        growth.peak, growth.held = peak - base, current - base
    finally:
        tracemalloc.stop()


@pytest.fixture
async def backend():
    closed = asyncio.get_running_loop().create_future()
    state = SimpleNamespace(seen=[], big_sent=0, ws_opened=0, ws_closed=closed)
    app = web.Application([(PREFIX + path, handler, kwargs) for path, handler, kwargs in [
        ("echo", Echo, {"state": state}), ("big", Big, {"state": state}), ("upload", Upload, {}),
        ("cookies", Cookies, {}), ("redirect", Redirect, {}), ("ws", WsEcho, {"state": state})]])
    async with served(app) as port:
        state.url = f"http://127.0.0.1:{port}"
        yield state


def proxy_app(backend, xsrf_cookies=True) -> web.Application:
    sock, down_port = bind_unused_port()
    sock.close()  # nothing listens there
    targets = {"s1": ProxyTarget(backend.url, BACKEND_TOKEN),
               "down": ProxyTarget(f"http://127.0.0.1:{down_port}", "t")}
    route = r"/services/labdeck/debug/(?P<session_id>[^/]+)/open/.*"
    return web.Application([(route, OpenHandler, {"targets": targets})],
                           cookie_secret="test-secret", xsrf_cookies=xsrf_cookies, login_url="/hub/login")


@pytest.fixture(params=[True, False], ids=["xsrf_cookies", "no_xsrf_setting"])
async def proxy(request, backend):
    """The proxy's origin, with and without tornado's app-wide XSRF check (the proxy must not rely on it)."""
    async with served(proxy_app(backend, xsrf_cookies=request.param)) as port:
        yield f"http://127.0.0.1:{port}"


class Browser:
    """Keeps cookies like a browser signed in to labdeck and the hub."""

    def __init__(self, origin):
        self.origin = origin
        self.cookies = {"service-labdeck": "alice", "jupyterhub-session-id": "hub-session"}

    async def fetch(self, path, headers=None, **kw):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **(headers or {})}
        r = await AsyncHTTPClient().fetch(self.origin + path, headers=headers, follow_redirects=False,
                                          raise_error=False, request_timeout=120, **kw)
        for line in r.headers.get_list("Set-Cookie"):
            self.cookies.update({k: m.value for k, m in SimpleCookie(line).items()})
        return r

    async def xsrf_fetch(self, path, headers=None, **kw):
        if "_xsrf" not in self.cookies:
            await self.fetch(PREFIX + "echo")  # any page through the proxy leaves labdeck's cookie
        return await self.fetch(path, headers={"X-XSRFToken": self.cookies["_xsrf"], **(headers or {})}, **kw)


async def raw_request(proxy, start_line: str, headers: dict):
    """A request head written by hand on a socket, for what an HTTP client library would not do."""
    host, port = proxy.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [start_line, f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    return reader, writer


def received(response) -> dict:
    assert response.code == 200, response.body[:500]
    return json.loads(response.body)


# ---- HTTP ----

async def test_get_reaches_the_backend_with_its_token_and_without_labdeck_credentials(proxy, backend):
    browser = Browser(proxy)
    browser.cookies.update(_xsrf="2|abc", backend_session="b1")
    r = await browser.fetch(PREFIX + "echo?a=1&b=%20x", headers={
        "Authorization": "token client-secret", "Connection": "keep-alive, X-Hop", "X-Hop": "1",
        "X-Real-Ip": "6.6.6.6"})
    seen = received(r)
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", PREFIX + "echo", "a=1&b=%20x")
    assert seen["headers"]["authorization"] == f"token {BACKEND_TOKEN}"
    assert seen["cookies"] == ["backend_session"]
    host = proxy.removeprefix("http://")
    assert seen["headers"]["host"] == seen["headers"]["x-forwarded-host"] == host
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert not {"x-hop", "x-real-ip"} & set(seen["headers"])


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_is_forwarded_with_its_body(proxy, method):
    body = json.dumps({"content": "print('hi')"}) if method in ("POST", "PUT", "PATCH") else None
    seen = received(await Browser(proxy).xsrf_fetch(PREFIX + "echo?x=2", method=method, body=body))
    assert (seen["method"], seen["query"], seen["body"]) == (method, "x=2", body or "")


async def test_head_is_forwarded(proxy):
    r = await Browser(proxy).fetch(PREFIX + "echo", method="HEAD")
    assert (r.code, r.headers.get("X-Method"), r.body) == (200, "HEAD", b"")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_unsafe_methods_without_labdecks_xsrf_token_never_reach_the_backend(proxy, backend, method):
    browser = Browser(proxy)
    await browser.fetch(PREFIX + "echo")
    backend.seen.clear()
    body = "{}" if method != "DELETE" else None
    r = await browser.fetch(PREFIX + "echo", method=method, body=body)
    assert r.code == 403
    forged = await browser.fetch(PREFIX + "echo", method=method, body=body,
                                 headers={"X-XSRFToken": "2|00|11|22"})
    assert forged.code == 403
    assert backend.seen == []


async def test_backend_xsrf_cookie_is_stripped_so_the_browser_holds_only_labdecks(proxy):
    browser = Browser(proxy)
    r = await browser.fetch(PREFIX + "cookies")
    names = [next(iter(SimpleCookie(line))) for line in r.headers.get_list("Set-Cookie")]
    assert sorted(names) == ["_xsrf", "backend_session"]  # labdeck's _xsrf, the backend's own cookie
    assert browser.cookies["_xsrf"] != "backend-xsrf"
    assert browser.cookies["service-labdeck"] == "alice"
    assert received(await browser.xsrf_fetch(PREFIX + "echo", method="POST", body="ok"))["body"] == "ok"


async def test_redirects_are_passed_through(proxy):
    r = await Browser(proxy).fetch(PREFIX + "redirect")
    assert (r.code, r.headers["Location"]) == (302, PREFIX + "echo?from=redirect")


async def test_signed_out_users_go_to_login_and_unknown_sessions_are_404(proxy, backend):
    browser = Browser(proxy)
    del browser.cookies["service-labdeck"]
    r = await browser.fetch(PREFIX + "echo")
    assert r.code == 302 and r.headers["Location"].startswith("/hub/login?next=")
    assert (await browser.fetch(PREFIX + "echo", method="POST", body="x")).code == 403
    assert (await Browser(proxy).fetch("/services/labdeck/debug/other/open/echo")).code == 404
    assert backend.seen == []


async def test_backend_down_is_a_502_without_traceback(proxy):
    r = await Browser(proxy).fetch("/services/labdeck/debug/down/open/lab")
    assert r.code == 502
    assert b"Traceback" not in r.body


async def test_a_backend_dying_mid_download_is_an_error_not_a_short_file(proxy):
    chunks = []
    with pytest.raises(HTTPClientError) as cut:  # the connection is cut, not a complete 200
        await Browser(proxy).fetch(PREFIX + "big?cut=1", streaming_callback=chunks.append)
    assert cut.value.code == 599
    assert 0 < sum(map(len, chunks)) < BIG_CHUNKS * MiB


async def test_large_download_streams_intact_without_being_held_in_memory(proxy):
    sha, size = hashlib.sha256(), 0

    def got(chunk):
        nonlocal size
        sha.update(chunk)
        size += len(chunk)

    with memory_growth() as growth:
        r = await Browser(proxy).fetch(PREFIX + "big", streaming_callback=got)
    assert r.code == 200
    assert (size, sha.hexdigest()) == (BIG_CHUNKS * MiB, BIG_SHA256)
    assert growth.peak < 16 * MiB


async def test_a_slow_browser_holds_the_backend_back(proxy, backend):
    """The proxy reads from the backend only as fast as the browser takes the data."""
    reader, writer = await raw_request(proxy, f"GET {PREFIX}big HTTP/1.1", {"Cookie": "service-labdeck=alice"})
    await reader.readexactly(MiB)  # then stop reading, like a slow link
    with memory_growth() as growth:
        last, steady = -1, 0
        for _ in range(200):  # until the backend stops getting rid of data
            await asyncio.sleep(0.05)
            steady = steady + 1 if backend.big_sent == last else 0
            last = backend.big_sent
            if steady == 6:
                break
    writer.close()
    assert steady == 6 and backend.big_sent < BIG_CHUNKS * MiB
    assert growth.held < 8 * MiB


async def test_large_upload_streams_intact_without_being_held_in_memory(proxy):
    async def produce(write):
        for i in range(BIG_CHUNKS):
            await write(big_chunk(i))

    browser = Browser(proxy)
    await browser.fetch(PREFIX + "echo")
    with memory_growth() as growth:
        r = await browser.xsrf_fetch(PREFIX + "upload", method="PUT", body_producer=produce,
                                     headers={"Content-Length": str(BIG_CHUNKS * MiB)})
    assert received(r) == {"size": BIG_CHUNKS * MiB, "sha256": BIG_SHA256}
    assert growth.peak < 16 * MiB


async def test_a_body_over_the_limit_is_refused_before_any_of_it_is_sent(proxy, backend):
    browser = Browser(proxy)
    await browser.fetch(PREFIX + "echo")
    backend.seen.clear()
    cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    reader, writer = await raw_request(proxy, f"PUT {PREFIX}echo HTTP/1.1", {
        "Cookie": cookies, "X-XSRFToken": browser.cookies["_xsrf"], "Content-Length": BODY_LIMIT + 1})
    status = await reader.readline()
    writer.close()
    assert status.split()[1] == b"413"
    assert backend.seen == []


# ---- websockets ----

def ws_request(proxy, path=PREFIX + "ws", origin=None, session="s1") -> HTTPRequest:
    path = path.replace("/s1/", f"/{session}/")
    headers = {"Cookie": "service-labdeck=alice; jupyterhub-session-id=h; _xsrf=2|x; backend_session=b1",
               "Origin": origin or proxy}
    return HTTPRequest(proxy.replace("http", "ws") + path, headers=headers)


async def test_websocket_echoes_text_and_binary_with_the_backends_subprotocol(proxy, backend):
    conn = await websocket.websocket_connect(ws_request(proxy), subprotocols=["other", KERNEL_PROTOCOL])
    assert conn.selected_subprotocol == KERNEL_PROTOCOL
    await conn.write_message("hello")
    assert await conn.read_message() == "hello"
    await conn.write_message(b"\x00\xffbinary", binary=True)
    assert await conn.read_message() == b"\x00\xffbinary"
    await conn.write_message("headers")
    assert json.loads(await conn.read_message()) == {"authorization": f"token {BACKEND_TOKEN}",
                                                     "cookies": ["backend_session"]}
    conn.close(1000)
    assert await asyncio.wait_for(backend.ws_closed, 10) == 1000


async def test_websocket_closed_by_the_backend_closes_the_browser_side(proxy):
    conn = await websocket.websocket_connect(ws_request(proxy))
    await conn.write_message("close")
    assert await conn.read_message() is None
    assert (conn.close_code, conn.close_reason) == (4001, "bye")


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1"])
async def test_cross_origin_websocket_is_refused(proxy, backend, origin):
    with pytest.raises(HTTPClientError) as refused:
        await websocket.websocket_connect(ws_request(proxy, origin=origin))
    assert refused.value.code == 403
    assert backend.ws_opened == 0


async def test_websocket_to_a_backend_that_is_down_is_a_502(proxy):
    with pytest.raises(HTTPClientError) as failed:
        await websocket.websocket_connect(ws_request(proxy, session="down"))
    assert failed.value.code == 502
