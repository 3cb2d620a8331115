"""Browsing a job's results and following its log (handlers/files.py), in-process, no hub.

The handlers are composed as the jobs module composes them (its hooks first, then the ready-made
handler on the service's BaseHandler/APIHandler: real pages, real error pages), with one change:
the user is signed in by a plain test cookie instead of HubOAuth.
"""

import asyncio
import io
import json
import os
import re
import tarfile
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from handlers.app import jinja_env
from handlers.files import (FilesArchiveHandler, FilesPageHandler, Folder, LogAPIHandler, LogDownloadHandler,
                            LogPageHandler)
from services import output_archive, outputs
from tests.handlers.test_proxy import served
from tests.services.test_outputs import ODD, tree_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

PREFIX = "/services/labdeck/"
FILES = PREFIX + "jobs/job-1/files/"
MiB = 1024 * 1024


class SignedInByCookie:
    """Stands in for HubOAuth: the user named by the ``user`` cookie."""

    hub_auth = SimpleNamespace(hub_prefix="/hub/", login_url="/hub/login", base_url=PREFIX)

    async def prepare(self):
        pass

    def get_current_user(self):
        name = self.get_cookie("user")
        return {"name": name, "admin": False, "groups": []} if name else None

    def get_login_url(self):
        return "/hub/login"


class JobHooks:
    """What the jobs module provides: alice's job-1, its output folder and log; 404 otherwise."""

    def initialize(self, job):
        self.job = job

    def visible_or_404(self):
        if self.path_kwargs["job_id"] != "job-1":
            raise web.HTTPError(404, "No such job")
        self.check_visible("alice", "job")

    async def files_root(self):
        self.visible_or_404()
        return Folder(self.job.out, "Results of job-1", name="job-1", back_url=PREFIX + "jobs")

    async def log_file(self):
        self.visible_or_404()
        return self.job.log, "Log of job-1"  # the plain form; the page polls api/jobs/job-1/log

    async def log_done(self):
        return self.job.done


class Files(JobHooks, SignedInByCookie, FilesPageHandler):
    pass


class Archive(JobHooks, SignedInByCookie, FilesArchiveHandler):
    pass


class Log(JobHooks, SignedInByCookie, LogPageHandler):
    pass


class LogFileDownload(JobHooks, SignedInByCookie, LogDownloadHandler):
    pass


class LogJSON(JobHooks, SignedInByCookie, LogAPIHandler):
    pass


@pytest.fixture
def job(tmp_path):
    out = tmp_path / "jobs" / "alice" / "job-1" / "output"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "deep.txt").write_text("deep\n")
    (out / "notes.txt").write_text("notes <script>alert(1)</script>\n")
    (out / "bin.dat").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (out / "long.txt").write_text("0123456789abcde\n" * 8192)  # 128 KiB of text
    (out / "weights.bin").write_bytes(os.urandom(3 * MiB))
    (out / ODD).write_text("odd\n")
    (out.parent / "secret.txt").write_text("secret\n")
    (out / "etc").symlink_to("/etc")
    (out / "up").symlink_to("../secret.txt")
    (out / "inside").symlink_to("a/b/deep.txt")
    (out / "dangling").symlink_to("a/none")
    return SimpleNamespace(out=out, log=out.parent / "log.txt", done=False)


@pytest.fixture
async def site(job):
    kwargs = {"job": job}
    job_route = PREFIX + r"jobs/(?P<job_id>[^/]+)/"
    app = web.Application([
        (job_route + r"files(?:/(?P<path>.*))?", Files, kwargs),
        (job_route + r"archive", Archive, kwargs),
        (job_route + r"log", Log, kwargs),
        (job_route + r"log\.txt", LogFileDownload, kwargs),
        (PREFIX + r"api/jobs/(?P<job_id>[^/]+)/log", LogJSON, kwargs),
    ], platform=None, service_prefix=PREFIX, jinja_env=jinja_env(), cookie_secret="test-secret")
    async with served(app) as port:
        yield f"http://127.0.0.1:{port}"


async def get(site, path, user="alice", **kw):
    headers = {"Cookie": f"user={user}"} if user else {}
    return await AsyncHTTPClient().fetch(site + path, headers=headers, follow_redirects=False,
                                         raise_error=False, request_timeout=60, **kw)


def text_of(response) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", response.body.decode()))


def links(response) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="([^"]*)"', response.body.decode())]


# ---------------------------------------------------------------- pages


async def test_listing_shows_folders_files_and_links_with_relative_links(site):
    r = await get(site, FILES)
    assert r.code == 200
    page = text_of(r)
    for shown in ("Results of job-1", "Download all (.tar.gz)", "notes.txt", "odd \ufffd name", "3.0 MiB",
                  "etc → /etc (outside this folder, or missing)", "inside → a/b/deep.txt"):
        assert shown in " ".join(page.split())
    hrefs = links(r)
    assert {"a/", "notes.txt", "notes.txt?download=1", "a/?download=1", "odd%20%FF%20name", "./?download=1",
            "inside", "inside?download=1", PREFIX + "jobs"} <= set(hrefs)
    assert not {"etc", "up", "dangling"} & set(hrefs)  # links leading outside, or nowhere, open nothing
    assert page.index("a/") < page.index("bin.dat")  # folders first


async def test_sub_folder_breadcrumbs_lead_back_up(site):
    r = await get(site, FILES + "a/b/")
    assert r.code == 200 and "deep.txt" in text_of(r)
    crumbs = re.search(r'<ol class="breadcrumb[^"]*" id="crumbs">(.*?)</ol>', r.body.decode(), re.S).group(1)
    assert re.findall(r'href="([^"]*)"', crumbs) == ["../../", "../"]
    assert "../../?download=1" in links(r)


@pytest.mark.parametrize("path, location", [
    ("jobs/job-1/files", FILES),
    ("jobs/job-1/files/a", FILES + "a/"),
    ("jobs/job-1/files/a/b?x=1", FILES + "a/b/?x=1"),
    ("jobs/job-1/files/notes.txt/", FILES + "notes.txt"),
])
async def test_folders_end_in_a_slash_and_files_do_not(site, path, location):
    r = await get(site, PREFIX + path)
    assert (r.code, r.headers.get("Location")) == (302, location)


async def test_text_preview_is_escaped(site):
    r = await get(site, FILES + "notes.txt")
    assert r.code == 200
    assert "<script>alert(1)</script>" not in r.body.decode()
    assert "notes <script>alert(1)</script>" in text_of(r)
    assert "?download=1" in links(r) and "Truncated" not in text_of(r)


async def test_preview_of_a_large_text_file_is_capped_with_a_note(site):
    r = await get(site, FILES + "long.txt")
    shown = unescape(re.search(r'<pre class="file-view" id="preview">(.*?)</pre>', r.body.decode(), re.S).group(1))
    assert len(shown) == 64 * 1024 and shown.startswith("0123456789abcde\n")
    note = " ".join(text_of(r).split())
    assert "Truncated: this shows the first 64.0 KiB of 128.0 KiB. Download the whole file" in note


async def test_a_binary_file_is_offered_for_download_not_shown(site):
    r = await get(site, FILES + "bin.dat")
    assert "Binary file, 11 bytes" in text_of(r)
    assert 'id="preview"' not in r.body.decode()


async def test_a_link_inside_the_folder_is_shown(site):
    r = await get(site, FILES + "inside")
    assert r.code == 200 and "deep" in text_of(r)


# ---------------------------------------------------------------- downloads


@pytest.mark.parametrize("path, name", [
    ("notes.txt", "notes.txt"), ("weights.bin", "weights.bin"), ("a/b/deep.txt", "deep.txt"),
    ("odd%20%FF%20name", "odd _ name"),
])
async def test_download_streams_the_whole_file_as_an_attachment(site, job, path, name):
    chunks = []
    r = await get(site, FILES + path + "?download=1", streaming_callback=chunks.append)
    expected = (job.out / outputs_name(path)).read_bytes()
    assert r.code == 200
    assert b"".join(chunks) == expected
    assert int(r.headers["Content-Length"]) == len(expected)
    assert r.headers["Content-Disposition"].startswith(f'attachment; filename="{name}"')
    assert r.headers["Content-Type"] == "application/octet-stream"


async def test_a_file_that_shrinks_while_downloaded_is_a_cut_download_not_a_short_file(site, job, monkeypatch,
                                                                                          caplog):
    real_open_file = outputs.open_file

    def shrinking(*args, **kwargs):
        f, size = real_open_file(*args, **kwargs)
        os.truncate(job.out / "weights.bin", MiB)  # the job rewrites it just after it was opened
        return f, size

    monkeypatch.setattr(outputs, "open_file", shrinking)
    chunks = []
    with pytest.raises(HTTPClientError) as cut:  # the connection is closed: the browser reports a failure
        await get(site, FILES + "weights.bin?download=1", streaming_callback=chunks.append)
    assert cut.value.code == 599
    assert sum(map(len, chunks)) == MiB
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def outputs_name(url_path: str) -> str:
    return os.fsdecode(re.sub(rb"%([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), url_path.encode()))


def tree_from_archive(body: bytes, dest: Path, top: str) -> dict:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(dest, filter="tar")
    return tree_of(dest / top)


@pytest.mark.parametrize("path, top, folder", [
    ("jobs/job-1/archive", "job-1", ""),
    ("jobs/job-1/files/?download=1", "job-1", ""),
    ("jobs/job-1/files/a/?download=1", "a", "a"),
    ("jobs/job-1/files/a/b?download=1", "b", "a/b"),
])
async def test_archive_download_extracts_to_the_same_files(site, job, tmp_path, path, top, folder):
    r = await get(site, PREFIX + path)
    assert r.code == 200
    assert r.headers["Content-Type"] == "application/gzip"
    assert r.headers["Content-Disposition"].startswith(f'attachment; filename="{top}.tar.gz"')
    assert "Content-Length" not in r.headers  # streamed while it is made
    assert tree_from_archive(r.body, tmp_path / "x", top) == tree_of(job.out / folder)


async def test_a_client_leaving_mid_archive_stops_it(site, job, monkeypatch):
    (job.out / "weights.bin").write_bytes(os.urandom(64 * MiB))  # does not compress: a 64 MiB archive
    made = SimpleNamespace(bytes=0, closed=False)

    def watched(*args, **kwargs):
        chunks = real_archive_chunks(*args, **kwargs)

        def counted():
            try:
                for chunk in chunks:
                    made.bytes += len(chunk)
                    yield chunk
            finally:
                made.closed = True
                chunks.close()
        return counted()

    real_archive_chunks = output_archive.archive_chunks
    monkeypatch.setattr(output_archive, "archive_chunks", watched)
    host, port = site.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {PREFIX}jobs/job-1/archive HTTP/1.1\r\nHost: x\r\nCookie: user=alice\r\n\r\n".encode())
    assert b" 200 " in await reader.readline()
    await reader.read(64 * 1024)
    writer.close()
    for _ in range(400):  # the server notices at its next write
        if made.closed:
            break
        await asyncio.sleep(0.05)
    assert made.closed
    assert made.bytes < 32 * MiB


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("path, message", [
    ("../secret.txt", "must not contain '..'"),
    ("a/../../secret.txt", "must not contain '..'"),
    ("a/%2E%2E/%2E%2E/secret.txt", "must not contain '..'"),
    ("%2Fetc%2Fpasswd", "/etc/passwd is absolute"),
    ("etc/passwd", "etc/passwd leads outside the folder"),
    ("up", "up leads outside the folder"),
    ("notes.txt%00", "must not contain NUL bytes or control characters"),
])
@pytest.mark.parametrize("query", ["", "?download=1"])
async def test_paths_leaving_the_folder_are_refused(site, path, message, query):
    r = await get(site, FILES + path + query)
    assert r.code == 400
    assert message in text_of(r)
    assert b"secret\n" not in r.body and b"root:" not in r.body and b"Traceback" not in r.body


@pytest.mark.parametrize("path", [FILES + "none.txt", FILES + "none.txt?download=1", FILES + "dangling",
                                  FILES + "a/none/", PREFIX + "jobs/job-2/files/", PREFIX + "jobs/job-2/archive"])
async def test_missing_files_and_other_jobs_are_404(site, path):
    assert (await get(site, path)).code == 404


async def test_other_users_get_404_and_signed_out_users_go_to_login(site):
    for path in (FILES, FILES + "notes.txt?download=1", PREFIX + "jobs/job-1/archive",
                 PREFIX + "jobs/job-1/log", PREFIX + "jobs/job-1/log.txt", PREFIX + "api/jobs/job-1/log"):
        assert (await get(site, path, user="bob")).code == 404, path
    r = await get(site, FILES, user=None)
    assert r.code == 302 and r.headers["Location"].startswith("/hub/login?next=")


# ---------------------------------------------------------------- logs


async def log_api(site, offset=None):
    query = "" if offset is None else f"?offset={offset}"
    r = await get(site, PREFIX + "api/jobs/job-1/log" + query)
    assert r.code == 200, r.body
    assert r.headers["Content-Type"].startswith("application/json")
    return json.loads(r.body)


async def test_log_api_follows_a_growing_log_until_the_job_ends(site, job):
    assert await log_api(site, 0) == {"text": "", "start": 0, "offset": 0, "size": 0, "done": False, "reset": False}
    job.log.write_text("epoch 1\n")
    first = await log_api(site, 0)
    assert (first["text"], first["offset"], first["size"], first["done"]) == ("epoch 1\n", 8, 8, False)
    with open(job.log, "a") as f:
        f.write("epoch 2 — loss 0.3\n")
    second = await log_api(site, first["offset"])
    assert second["text"] == "epoch 2 — loss 0.3\n"
    assert second["offset"] == second["size"] == job.log.stat().st_size
    assert (await log_api(site, second["offset"]))["text"] == ""
    job.done = True
    last = await log_api(site, second["offset"])
    assert (last["text"], last["done"]) == ("", True)


async def test_log_api_starts_again_when_the_log_was_replaced_and_reads_the_tail_without_offset(site, job):
    job.log.write_text("".join(f"line {i}\n" for i in range(20000)))  # ~200 KiB
    tail = await log_api(site)
    assert tail["text"].startswith("line ") and tail["text"].endswith("line 19999\n")
    assert tail["start"] > 0 and tail["offset"] == tail["size"] and len(tail["text"]) <= 64 * 1024
    job.log.write_text("again\n")
    again = await log_api(site, tail["offset"])
    assert (again["text"], again["start"], again["offset"], again["reset"]) == ("again\n", 0, 6, True)


@pytest.mark.parametrize("offset", ["-1", "abc", "1e3", "²"])
async def test_log_api_refuses_a_bad_offset(site, offset):
    r = await get(site, PREFIX + "api/jobs/job-1/log?offset=" + offset)
    assert r.code == 400
    assert json.loads(r.body) == {"status": 400, "message": "offset: must be a whole number of bytes, 0 or more"}


async def test_log_page_shows_the_log_and_polls_for_more(site, job):
    job.log.write_text("starting\nepoch 1  10%\repoch 1 100%\n")
    r = await get(site, PREFIX + "jobs/job-1/log")
    assert r.code == 200
    body = r.body.decode()
    shown = unescape(re.search(r'<pre class="log-view" id="log"[^>]*>(.*?)</pre>', body, re.S).group(1))
    assert shown == "starting\nepoch 1 100%\n"  # a progress bar shows its last state
    assert f'data-api="{PREFIX}api/jobs/job-1/log"' in body
    assert f'data-offset="{job.log.stat().st_size}"' in body and 'data-done="false"' in body
    assert "static/log.js" in body and "Download the whole log" in text_of(r)


@pytest.mark.parametrize("path", ["jobs/job-1/log?download=1", "jobs/job-1/log.txt"])
async def test_log_download_is_the_whole_file(site, job, path):
    job.log.write_bytes(b"x" * (200 * 1024) + b"\nend\n")
    r = await get(site, PREFIX + path)
    assert r.code == 200 and r.body == job.log.read_bytes()
    assert int(r.headers["Content-Length"]) == len(r.body)
    assert r.headers["Content-Disposition"].startswith('attachment; filename="log.txt"')


async def test_a_log_not_written_yet_is_an_empty_page_and_no_download(site):
    r = await get(site, PREFIX + "jobs/job-1/log")
    assert r.code == 200 and "Nothing has been logged yet" in text_of(r)
    for path in ("jobs/job-1/log?download=1", "jobs/job-1/log.txt"):
        assert (await get(site, PREFIX + path)).code == 404
