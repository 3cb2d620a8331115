"""Browse, preview and download the files a workload produced; follow its log as it grows.

Handlers for a module (jobs now, caches later) to route after adding its hooks, hooks first. Each
asks its hook for what it shows, after the permission check (raise 404 if not allowed)::

    class JobFolder:
        async def files_root(self) -> Folder:        # or a (path, title) tuple
            job = await self.job_or_404(self.path_kwargs["job_id"])
            return Folder(output_dir, f"Output of {job['name']}", name=job["id"], back_url=jobs_page)

        async def log_file(self) -> LogFile:         # or a (path, title) tuple
            ...
        async def log_done(self) -> bool:            # true once the job ended and its log is complete
            ...

    class JobFiles(JobFolder, FilesPageHandler): ...        # jobs/<id>/files(?:/(?P<path>.*))?
    class JobArchive(JobFolder, FilesArchiveHandler): ...   # jobs/<id>/archive
    class JobLogPage(JobFolder, LogPageHandler): ...        # jobs/<id>/log  (?download=1: the file)
    class JobLogDownload(JobFolder, LogDownloadHandler): ...  # jobs/<id>/log.txt
    class JobLogAPI(JobFolder, LogAPIHandler): ...          # api/jobs/<id>/log?offset=N

The pages link relatively below ``files/``; the log page polls the same path under ``api/``
unless LogFile.api_url says otherwise. Every read runs in a worker thread, a chunk at a time.
"""

import asyncio
import re
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from tornado import iostream, web
from tornado.log import app_log

from services import output_archive, outputs
from services.errors import OptionError

from .base import APIHandler, BaseHandler


class Folder(NamedTuple):
    path: Path  # the folder shown
    title: str  # page heading
    name: str = ""  # the archive's file and top folder name (default: the folder's name)
    back_url: str = ""  # where "back" leads (the module's list)


class LogFile(NamedTuple):
    path: Path  # may not exist yet (a queued job): shown as empty
    title: str
    api_url: str = ""  # LogAPI's URL for this log; LogPage polls it
    back_url: str = ""
    name: str = "log.txt"  # the downloaded file's name


def human_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))


def href(name: str) -> str:
    """A link to a name (any bytes) relative to its folder's page."""
    return quote(name, safe="", errors="surrogateescape")


def attachment(filename: str) -> str:
    """Content-Disposition for a download: a plain ASCII name plus the exact one (RFC 6266)."""
    name = outputs.shown(filename, 200)
    plain = re.sub(r"[^A-Za-z0-9._ -]", "_", name).strip() or "download"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


# what a path may turn out to be: refused (400), missing (404), or not readable by the service (403)
PATH_ERRORS = (OptionError, FileNotFoundError, PermissionError)


def http_error(error: Exception) -> web.HTTPError:
    if isinstance(error, OptionError):
        return web.HTTPError(400, str(error))
    if isinstance(error, PermissionError):
        return web.HTTPError(403, "The service may not read this file")
    return web.HTTPError(404, "No such file or folder")


class StreamingMixin:
    """Sends a file or a folder's archive in chunks, each read in a worker thread."""

    async def stream_file(self, f, size: int, filename: str):
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", attachment(filename))
        self.set_header("Content-Length", str(size))
        self.set_header("X-Content-Type-Options", "nosniff")
        remaining = size  # a file growing meanwhile is sent as it was when opened
        try:
            while remaining:
                chunk = await asyncio.to_thread(f.read, min(outputs.CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                self.write(chunk)
                await self.flush()
        except iostream.StreamClosedError:
            return  # the client went away
        finally:
            f.close()
        if remaining:  # shrank while sent: a cut connection, not a short file that looks whole
            self.request.connection.close()

    async def stream_archive(self, root, relative: str, name: str):
        try:
            chunks = await asyncio.to_thread(output_archive.archive_chunks, root, relative, name)
        except PATH_ERRORS as e:
            raise http_error(e) from None
        self.set_header("Content-Type", "application/gzip")
        self.set_header("Content-Disposition", attachment(f"{name}.tar.gz"))
        self.set_header("X-Content-Type-Options", "nosniff")
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                self.write(chunk)
                await self.flush()  # at the client's pace; raises once it has gone
        except iostream.StreamClosedError:
            pass
        except Exception:
            app_log.exception("Archive of %s failed", root)
            self.request.connection.close()  # an archive cut short must not look complete
        finally:
            await asyncio.to_thread(chunks.close)


class FolderMixin(StreamingMixin):
    async def files_root(self) -> Folder:
        """The folder the current user may see (raise HTTPError(404) otherwise)."""
        raise NotImplementedError

    async def files_folder(self) -> Folder:
        folder = Folder(*await self.files_root())
        return folder._replace(name=folder.name or Path(folder.path).name or "files")


def _look(root, rel: str):
    """What a files page shows: a Listing, or the Preview of a file."""
    real = outputs.resolve(root, rel)
    if real.is_dir():
        return outputs.list_dir(root, rel)
    return outputs.read_preview(real, root=root)


def _open_download(root, rel: str):
    """(None, 0) for a folder (sent as an archive), else the opened file and its size."""
    real = outputs.resolve(root, rel)
    if real.is_dir():
        return None, 0
    return outputs.open_file(real, root=root)


class FilesPage(FolderMixin):
    """``.../files/<path>``: a folder's listing or a file's preview; ``?download=1``: the file,
    or the folder as .tar.gz. Refused paths: 400 with the reason; missing: 404."""

    def decode_argument(self, value: bytes, name=None):
        if name == "path" and value is not None:  # names written by a job need not be UTF-8
            return value.decode("utf-8", "surrogateescape")
        return super().decode_argument(value, name=name)

    @web.authenticated
    async def get(self, path=None, **kwargs):
        folder = await self.files_folder()
        if path is None:  # ".../files": links below are relative to ".../files/"
            return self.redirect(self._with_query(self.request.path + "/"))
        download = self.get_argument("download", "") == "1"
        try:
            rel = outputs.clean_relative(path)
            if download:
                return await self._download(folder, rel)
            shown = await asyncio.to_thread(_look, folder.path, rel)
        except PATH_ERRORS as e:
            raise http_error(e) from None
        is_dir = isinstance(shown, outputs.Listing)
        if rel and is_dir != path.endswith("/"):  # folders end in "/", files do not
            fixed = self.request.path + "/" if is_dir else self.request.path.rstrip("/")
            return self.redirect(self._with_query(fixed))
        parts = rel.split("/") if rel else []
        ns = dict(page_title=folder.title, active_module=getattr(self, "active_module", None),
                  title=folder.title, back_url=folder.back_url,
                  crumbs=self._crumbs(folder, parts, is_dir))
        if is_dir:
            ns.update(listing=shown, entries=[self._row(e) for e in shown.entries])
        else:
            ns.update(preview=shown, size_text=human_size(shown.size), modified=when(shown.modified),
                      limit_text=human_size(outputs.PREVIEW_LIMIT))
        self.render_page("files.html", **ns)

    def _with_query(self, url: str) -> str:
        return url + ("?" + self.request.query if self.request.query else "")

    async def _download(self, folder: Folder, rel: str):
        f, size = await asyncio.to_thread(_open_download, folder.path, rel)
        if f is None:
            name = rel.rsplit("/", 1)[-1] if rel else folder.name
            return await self.stream_archive(folder.path, rel, name)
        await self.stream_file(f, size, rel.rsplit("/", 1)[-1])

    @staticmethod
    def _crumbs(folder: Folder, parts: list[str], is_dir: bool) -> list[dict]:
        """Links to the root and each folder above, relative to this page's URL."""
        depth = len(parts) if is_dir else len(parts) - 1  # folders this page's URL is in
        names = [folder.name, *parts]
        return [{"name": outputs.shown(n), "href": "../" * (depth - i) or "./"} for i, n in enumerate(names)]

    @staticmethod
    def _row(entry: outputs.Entry) -> dict:
        opens = entry.leads_to or entry.kind  # a link that leads outside or nowhere opens nothing
        link = href(entry.name) + ("/" if opens == "dir" else "") if opens in ("dir", "file") else ""
        return {"name": outputs.shown(entry.name, 200), "kind": entry.kind, "href": link,
                "size": human_size(entry.size) if entry.kind == "file" else "",
                "modified": when(entry.modified), "target": outputs.shown(entry.target, 200),
                "download": link and link + "?download=1", "archive": opens == "dir"}


class ArchiveDownload(FolderMixin):
    """The whole folder as ``<name>.tar.gz``, streamed while it is made."""

    @web.authenticated
    async def get(self, *args, **kwargs):
        folder = await self.files_folder()
        await self.stream_archive(folder.path, "", folder.name)


# ---------------------------------------------------------------- logs


class LogMixin(StreamingMixin):
    async def log_file(self) -> LogFile:
        """The log the current user may read (raise HTTPError(404) otherwise); a (path, title)
        tuple will do."""
        raise NotImplementedError

    async def log_done(self) -> bool:
        """True once nothing more will be written to the log (the job ended, its log is saved)."""
        raise NotImplementedError

    async def current_log(self) -> LogFile:
        return LogFile(*await self.log_file())

    async def read_log(self, log: LogFile, offset: int | None) -> tuple[outputs.LogChunk, bool]:
        """A piece of the log and whether it is complete (asked first: a job that ended wrote all)."""
        done = await self.log_done()
        try:
            chunk = await asyncio.to_thread(outputs.read_from, log.path, offset)
        except FileNotFoundError:  # nothing written yet
            chunk = outputs.LogChunk(b"", 0, 0, 0, bool(offset))
        except OptionError as e:
            raise http_error(e) from None
        return chunk, done

    async def send_log(self, log: LogFile):
        """The whole log as a download (as long as it was when the download began)."""
        try:
            f, size = await asyncio.to_thread(outputs.open_file, log.path)
        except PATH_ERRORS:
            raise web.HTTPError(404, "Nothing has been logged yet") from None
        await self.stream_file(f, size, log.name)


def collapse_returns(text: str) -> str:
    """A progress bar redraws its line with '\\r': keep what was drawn last on each line."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n"))


class LogPage(LogMixin):
    """The log's last lines, then followed live by static/log.js; ``?download=1``: the whole file.

    The page polls ``LogFile.api_url``; by default the same path under ``api/``
    (``jobs/<id>/log`` -> ``api/jobs/<id>/log``)."""

    def default_api_url(self) -> str:
        prefix = self.settings["service_prefix"]
        return prefix + "api/" + self.request.path.removeprefix(prefix)

    @web.authenticated
    async def get(self, *args, **kwargs):
        log = await self.current_log()
        if self.get_argument("download", "") == "1":
            return await self.send_log(log)
        chunk, done = await self.read_log(log, None)
        self.render_page("log.html", page_title=log.title, active_module=getattr(self, "active_module", None),
                         title=log.title, back_url=log.back_url, api_url=log.api_url or self.default_api_url(),
                         done=done, text=collapse_returns(chunk.data.decode("utf-8", "replace")),
                         start=chunk.offset, offset=chunk.next_offset, size=chunk.size,
                         size_text=human_size(chunk.size))


class LogDownload(LogMixin):
    """The whole log as a file, at a route of its own (the page also offers ``?download=1``)."""

    @web.authenticated
    async def get(self, *args, **kwargs):
        await self.send_log(await self.current_log())


class LogAPI(LogMixin):
    """GET ``?offset=N`` -> ``{"text", "start", "offset", "size", "done", "reset"}``: at most 64 KiB
    from byte N (``offset`` is where to ask next); without N, the last 64 KiB from a whole line."""

    @web.authenticated
    async def get(self, *args, **kwargs):
        log = await self.current_log()
        raw = self.get_argument("offset", "")
        if raw and not re.fullmatch(r"[0-9]{1,18}", raw):
            raise web.HTTPError(400, "offset: must be a whole number of bytes, 0 or more")
        chunk, done = await self.read_log(log, int(raw) if raw else None)
        self.set_header("Cache-Control", "no-store")
        self.write_json({"text": chunk.data.decode("utf-8", "replace"), "start": chunk.offset,
                         "offset": chunk.next_offset, "size": chunk.size, "done": done, "reset": chunk.reset})


# ---------------------------------------------------------------- ready to route: add the hooks first


class FilesPageHandler(FilesPage, BaseHandler):
    pass


class FilesArchiveHandler(ArchiveDownload, BaseHandler):
    pass


class LogPageHandler(LogPage, BaseHandler):
    pass


class LogDownloadHandler(LogDownload, BaseHandler):
    pass


class LogAPIHandler(LogAPI, APIHandler):
    pass
