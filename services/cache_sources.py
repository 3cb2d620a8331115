"""Remote sources of cache tasks: one file over HTTP(S), or any fsspec file system.

They implement services.cache_source's Source, as services.cache_local (local files) does;
services.cache_copy drives them all. HTTP: size from HEAD's Content-Length (required), a digest from
Digest/Repr-Digest/Content-MD5, parallel byte ranges when the server takes them, redirects
refused (the address the admin's host policy checked is the one read). fsspec: imported
lazily, digests only from fields that really are digests.
"""

import base64
import binascii
import hashlib
import posixpath
import re
import threading
from urllib.parse import unquote, urlsplit

import requests

from .cache_source import IO_BLOCK, Cancelled, CopyError, Source, SourceFile, size_changed, write_blocks


def _digest(value, nbytes: int) -> str | None:
    """A digest given as raw bytes, hex or base64; None for anything else."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex() if len(value) == nbytes else None
    if not isinstance(value, str):
        return None
    value = value.strip().strip(":\"")
    if re.fullmatch(f"[0-9a-fA-F]{{{2 * nbytes}}}", value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == nbytes else None


def _http_checksum(headers) -> tuple[str, str] | None:
    found = {}
    for header in ("Repr-Digest", "Content-Digest", "Digest"):  # RFC 9530, then RFC 3230
        for item in headers.get(header, "").split(","):
            algorithm, _, value = item.strip().partition("=")
            name = {"sha-256": "sha256", "md5": "md5"}.get(algorithm.strip().lower())
            if name and (hexdigest := _digest(value, hashlib.new(name).digest_size)):
                found.setdefault(name, hexdigest)
    if (md5 := _digest(headers.get("Content-MD5"), 16)) is not None:
        found.setdefault("md5", md5)
    return next(((name, found[name]) for name in ("sha256", "md5") if name in found), None)


class _HttpSource(Source):
    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url, timeout
        parts = urlsplit(url)
        name = unquote(posixpath.basename(parts.path)).replace("/", "_")
        self._name = name if name not in ("", ".", "..") else (parts.hostname or "download")
        self._shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self._local = threading.local()  # one session (connection pool) per worker thread
        self._sessions, self._lock = [], threading.Lock()
        self._ranges = None

    def describe(self) -> str:
        return self._shown

    @property
    def ranges(self) -> bool:
        if self._ranges is None:  # resumed without a scan: ask the server again
            self.scan()
        return self._ranges

    def _get(self, method: str, rel: str, headers=None):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Accept-Encoding"] = "identity"  # sizes and digests of the bytes as stored
            with self._lock:
                self._sessions.append(session)
        try:
            r = session.request(method, self.url, headers=headers, stream=True,
                                timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise self._failed(rel, exc) from None
        if r.is_redirect:
            r.close()
            raise CopyError(rel, f"the server redirects to {r.headers.get('Location')}; "
                                 "give that address instead")
        return r

    def _failed(self, rel: str, exc: Exception) -> CopyError:
        return CopyError(rel, f"cannot read {self._shown}: {exc.__class__.__name__}")

    def scan(self) -> list[SourceFile]:
        with self._get("HEAD", self._name) as r:
            pass
        if r.status_code in (405, 501):  # no HEAD: the headers of a GET, body left unread
            with self._get("GET", self._name) as r:
                pass
        if r.status_code != 200:
            raise CopyError(self._name, f"the server answered {r.status_code} {r.reason}")
        length = r.headers.get("Content-Length", "")
        if not length.isdigit():
            raise CopyError(self._name, "the server sends no Content-Length, so the download "
                                        "could not be checked for completeness")
        self._ranges = r.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        return [SourceFile(self._name, int(length), _http_checksum(r.headers))]

    def copy_range(self, f, fd, offset, length, step, hasher=None):
        whole = offset == 0 and length == f.size
        headers = None if whole else {"Range": f"bytes={offset}-{offset + length - 1}"}
        with self._get("GET", f.rel, headers) as r:
            if whole and r.status_code == 200:
                size = r.headers.get("Content-Length", str(f.size))
            elif not whole and r.status_code == 206:
                sent, _, size = r.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
                if size == str(f.size) and sent != f"{offset}-{offset + length - 1}":
                    raise CopyError(f.rel, f"the server sent bytes {sent}, not the range asked for")
            elif r.status_code == 200:
                raise CopyError(f.rel, "the server ignored a byte range request")
            else:
                raise CopyError(f.rel, f"the server answered {r.status_code} {r.reason}")
            if size != str(f.size):
                raise size_changed(f, size)
            try:
                write_blocks(f, fd, offset, length, r.iter_content(IO_BLOCK), step, hasher)
            except requests.RequestException as exc:  # the connection broke or timed out
                raise self._failed(f.rel, exc) from None

    def release(self):
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def http_source(url: str, *, timeout: float = 60) -> Source:
    """One file over http(s): one HEAD request (in scan(), or on resume) tells size, digest and
    whether byte ranges may be fetched in parallel."""
    return _HttpSource(url, timeout)


def _read_blocks(fh, length: int):
    while length and (data := fh.read(min(IO_BLOCK, length))):
        length -= len(data)
        yield data


def _fsspec_checksum(info: dict) -> tuple[str, str] | None:
    """A digest from fs.info(), only from fields that are one: an ETag is an MD5 only when
    strong, 32 hex digits, not multipart ("-") and not of an object encrypted with KMS or SSE-C."""
    for key in ("sha256", "ChecksumSHA256", "checksum_sha256"):
        if hexdigest := _digest(info.get(key), 32):
            return "sha256", hexdigest
    settings = info.get("content_settings") or {}
    for value in (info.get("md5"), info.get("md5Hash"), info.get("ContentMD5"),
                  getattr(settings, "get", lambda _: None)("content_md5")):
        if hexdigest := _digest(value, 16):
            return "md5", hexdigest
    etag = info.get("ETag") or info.get("etag") or info.get("e_tag")
    encrypted = (str(info.get("ServerSideEncryption", "")).startswith("aws:kms")
                 or info.get("SSECustomerAlgorithm"))
    if isinstance(etag, str) and not encrypted and re.fullmatch(r'"?[0-9a-fA-F]{32}"?', etag):
        return "md5", etag.strip('"').lower()
    return None


class _FsspecSource(Source):
    def __init__(self, url: str, fs, path: str):
        self.url, self.fs, self.root = url, fs, path.rstrip("/") or path
        self._single = None
        # the memory filesystem hands every reader one shared file object: no parallel ranges
        self.ranges = "memory" not in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()

    def _path(self, rel: str) -> str:
        if self._single is None:
            self._single = not self.fs.isdir(self.root)
        return self.root if self._single else f"{self.root}/{rel}"

    def _file(self, rel: str, info: dict) -> SourceFile:
        size = info.get("size")
        if size is None:
            raise CopyError(rel, "the storage does not tell its size")
        return SourceFile(rel, int(size), _fsspec_checksum(info))

    def scan(self) -> list[SourceFile]:
        try:
            self._single = not self.fs.isdir(self.root)
            if self._single:
                return [self._file(posixpath.basename(self.root), self.fs.info(self.root))]
            prefix = self.root.rstrip("/") + "/"
            found = self.fs.find(self.root, detail=True)
            return sorted((self._file(name[len(prefix):], info) for name, info in found.items()
                           if info.get("type") == "file" and name.startswith(prefix)),
                          key=lambda f: f.rel)
        except CopyError:
            raise
        except Exception as exc:  # each backend has its own errors
            raise CopyError(self.describe(), f"cannot list: {exc.__class__.__name__}: {exc}") from None

    def copy_range(self, f, fd, offset, length, step, hasher=None):
        try:
            with self.fs.open(self._path(f.rel), "rb") as fh:
                size = getattr(fh, "size", f.size)
                if size != f.size:
                    raise size_changed(f, size)
                fh.seek(offset)
                write_blocks(f, fd, offset, length, _read_blocks(fh, length), step, hasher)
                if offset + length == f.size and fh.read(1):
                    raise CopyError(f.rel, f"more than the expected {f.size} bytes arrived")
        except (CopyError, Cancelled):
            raise
        except Exception as exc:
            raise CopyError(f.rel, f"{exc.__class__.__name__}: {exc}") from None


def fsspec_source(url: str, **storage_options) -> Source:
    """Any fsspec protocol (the admin enables which); fsspec is an optional extra."""
    try:
        import fsspec
    except ImportError:
        raise CopyError(url, "fsspec is not installed: install labdeck with the fsspec extra "
                             "(pip install 'labdeck[fsspec]') and the package of the protocol") from None
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
    except (ImportError, ValueError) as exc:
        raise CopyError(url, f"cannot open this address: {exc}") from None
    return _FsspecSource(url, fs, path)
