"""The cache copy engine (services/cache_copy.py): complete, verified, resumable, cancellable copies."""

import base64
import errno
import hashlib
import itertools
import os
import random
import sys
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services import cache_local, cache_sources
from services.cache_copy import CopyTask, Progress
from services.cpu_groups import BACKGROUND_NICE
from services.cache_source import CopyError, SourceFile
from services.cache_local import local_source

MiB = 2**20
ODD = os.fsdecode(b"odd \xff name")  # not valid UTF-8: a data set may hold any bytes as a name


def digest(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "blake2b").hexdigest()


def make_tree(root, *, small: int, big: int) -> dict[str, str]:
    """Nested folders, empty files, ``small`` files of 0-5 KB and one sparse file of ``big``
    bytes with data here and there; returns rel -> digest of what a copy must hold."""
    rng = random.Random(small)
    files = {f"d{i % 7}/e{i % 13}/f{i}.bin": rng.randbytes(i * 37 % 5000) for i in range(small)}
    files.update({"empty": b"", "d1/empty": b"", "a/b/c/d/deep.txt": b"deep\n", f"{ODD}/x": b"odd\n"})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    with open(root / "big.dat", "wb") as fh:
        fh.truncate(big)
        for offset in range(0, big, 3 * MiB + 4097):
            fh.seek(offset)
            fh.write(rng.randbytes(4096))
    (root / "link-to-deep").symlink_to("a/b/c/d/deep.txt")  # inside: copied as a file
    (root / "link-to-folder").symlink_to("a")  # a folder link: its files are copied once, via "a"
    os.mkfifo(root / "fifo")  # no data: skipped
    expected = {rel: hashlib.blake2b(data).hexdigest() for rel, data in files.items()}
    expected["big.dat"] = digest(root / "big.dat")
    expected["link-to-deep"] = expected["a/b/c/d/deep.txt"]
    return expected


def contents(root) -> dict[str, str]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root).replace(os.sep, "/")] = digest(path)
    return out


def copy(source, target, **kwargs) -> tuple[Progress, list[str]]:
    done, progress = [], kwargs.pop("progress", None) or Progress()
    CopyTask(source, source.scan(), target, progress=progress, on_file_done=done.append, **kwargs).run()
    return progress, done


def after_first_range(source, action):
    """``source``, whose first copy_range runs ``action`` (once) after copying its range."""
    copy_range, once = source.copy_range, threading.Lock()

    def hooked(*args, **kwargs):
        copy_range(*args, **kwargs)
        if once.acquire(blocking=False):
            action()
    source.copy_range = hooked
    return source


@pytest.fixture(scope="module")
def large_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "data"
    root.mkdir()
    return root, make_tree(root, small=2000, big=200 * MiB)


def test_copies_a_tree_byte_for_byte_with_progress_rising_to_the_totals(large_tree, tmp_path):
    src, expected = large_tree
    source = local_source(str(src))
    files = source.scan()
    progress, samples, stop = Progress(), [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(progress.snapshot())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    done = []
    try:
        CopyTask(source, files, tmp_path / "cache", progress=progress, on_file_done=done.append).run()
    finally:
        stop.set()
        sampler.join()
    samples.append(progress.snapshot())

    assert contents(tmp_path / "cache") == expected
    assert sorted(done) == sorted(expected) == [f.rel for f in files]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(samples))
    assert samples[-1] == (sum(f.size for f in files), len(files))
    assert {os.stat(p).st_mode & 0o777 for p in (tmp_path / "cache").rglob("*")} == {0o644, 0o755}


def test_umask_does_not_narrow_modes(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "f").write_text("x")
    old = os.umask(0o077)
    try:
        copy(local_source(str(tmp_path / "src")), tmp_path / "cache")
    finally:
        os.umask(old)
    modes = [os.stat(tmp_path / "cache" / p).st_mode & 0o777 for p in ("", "a", "a/f")]
    assert modes == [0o755, 0o755, 0o644]


def refuse_kernel_copy(monkeypatch):
    """copy_file_range fails as between two file systems on kernels before 5.3."""
    def refuse(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "copy_file_range", refuse)


@pytest.mark.parametrize("kernel, workers, large_file, chunk_size", [
    (True, 1, 64 * MiB, 32 * MiB),  # one thread, whole files
    (True, 4, 1 * MiB, 256 * 1024),  # the big file in 40 ranges
    (False, 4, 1 * MiB, 300 * 1000),  # read/write where copy_file_range is refused; odd chunk size
    (False, 2, 64 * MiB, 32 * MiB),
])
def test_copy_paths(tmp_path, monkeypatch, resolve, kernel, workers, large_file, chunk_size):
    (tmp_path / "src").mkdir()
    expected = make_tree(tmp_path / "src", small=50, big=10 * MiB)
    if not kernel:
        refuse_kernel_copy(monkeypatch)
    copy(local_source(str(tmp_path / "src")), tmp_path / "cache",
         workers=workers, large_file=large_file, chunk_size=chunk_size)
    assert contents(tmp_path / "cache") == expected


@pytest.mark.parametrize("way", ["kernel", "read-write", "fsspec"])
def test_memory_stays_small_whatever_the_file_size(tmp_path, monkeypatch, way):
    size = 96 * MiB
    if way == "fsspec":
        fs = pytest.importorskip("fsspec").filesystem("memory")
        fs.pipe("/big/data.bin", b"\1" * size)
        source = cache_sources.fsspec_source("memory://big")
    else:
        (tmp_path / "src").mkdir()
        with open(tmp_path / "src" / "data.bin", "wb") as fh:
            fh.truncate(size)
        source = local_source(str(tmp_path / "src"))
        if way == "read-write":
            refuse_kernel_copy(monkeypatch)
    tracemalloc.start()
    try:
        copy(source, tmp_path / "cache", workers=4, large_file=16 * MiB, chunk_size=8 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        if way == "fsspec":
            fs.rm("/big", recursive=True)
    assert os.path.getsize(tmp_path / "cache" / "data.bin") == size
    assert peak < 8 * MiB  # a few 1 MiB buffers, not the file


def test_single_file_source_uses_its_basename(tmp_path):
    (tmp_path / "train.tar").write_bytes(b"t" * 1000)
    source = local_source(str(tmp_path / "train.tar"))
    assert source.scan() == [SourceFile("train.tar", 1000)]
    copy(source, tmp_path / "cache")
    assert (tmp_path / "cache" / "train.tar").read_bytes() == b"t" * 1000


def test_resume_skips_finished_files_without_reading_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    expected = make_tree(src, small=300, big=8 * MiB)
    os.unlink(src / "link-to-deep")  # its target may be deleted below
    del expected["link-to-deep"]
    source, cancel, done = local_source(str(src)), threading.Event(), []
    files = source.scan()

    def finished(rel):
        done.append(rel)
        if len(done) == 100:
            cancel.set()

    options = dict(workers=4, large_file=2 * MiB, chunk_size=MiB)
    CopyTask(source, files, tmp_path / "cache", on_file_done=finished, cancel=cancel, **options).run()
    assert 100 <= len(done) < len(files)
    assert not list((tmp_path / "cache").rglob("*.labdeck-part"))
    for rel in done:  # gone from the source: reading one again would fail the second run
        os.unlink(src / rel)

    progress = Progress(sum(f.size for f in files if f.rel in done), len(done))
    rest = []
    CopyTask(local_source(str(src)), files, tmp_path / "cache", done=set(done),
             progress=progress, on_file_done=rest.append, **options).run()
    assert contents(tmp_path / "cache") == expected
    assert sorted(done + rest) == sorted(expected)
    assert progress.snapshot() == (sum(f.size for f in files), len(files))


def test_leftover_parts_of_an_interrupted_run_are_deleted(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "f").write_text("new")
    (tmp_path / "cache" / "a").mkdir(parents=True)
    (tmp_path / "cache" / "a" / "f.labdeck-part").write_text("half")
    (tmp_path / "cache" / "gone.labdeck-part").write_text("half")
    copy(local_source(str(tmp_path / "src")), tmp_path / "cache")
    assert contents(tmp_path / "cache") == {"a/f": hashlib.blake2b(b"new").hexdigest()}


def test_cancel_stops_within_a_chunk_and_removes_parts(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(random.randbytes(8 * MiB))
    cancel = threading.Event()
    source = after_first_range(local_source(str(tmp_path / "src")), cancel.set)
    progress, done = copy(source, tmp_path / "cache", cancel=cancel, workers=2, large_file=MiB,
                          chunk_size=256 * 1024)
    assert done == [] and os.listdir(tmp_path / "cache") == []
    assert progress.bytes_done <= 3 * 256 * 1024  # the chunks under way finish, no others start



def test_halt_stops_a_paced_copy_at_once_keeping_finished_files_for_a_resume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(random.randbytes(2**18))  # 10 MiB in all
    source = local_source(str(src))
    files = source.scan()
    done = []
    task = CopyTask(source, files, tmp_path / "cache", on_file_done=done.append, max_rate=2**20, workers=2)
    thread = threading.Thread(target=task.run)
    thread.start()
    time.sleep(0.6)
    task.halt()  # the service stops: no error, no cancel, the files done stay
    thread.join(2)
    assert not thread.is_alive() and task.halted  # within the pacing's quarter second, not after 10 s
    assert 0 < len(done) < 40
    assert not list((tmp_path / "cache").rglob("*.labdeck-part"))
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(done)
    rest = []
    CopyTask(source, files, tmp_path / "cache", done=set(done), on_file_done=rest.append).run()
    assert sorted(done + rest) == sorted(f.rel for f in files)
    assert contents(tmp_path / "cache") == contents(src)

def grow(path):
    with open(path, "ab") as fh:
        fh.write(b"more")


@pytest.mark.parametrize("declared, mutate, ranges, reason", [
    (+10, None, False, "size 5000 != expected 5010"),
    (-1, None, False, "size 5000 != expected 4999"),
    (+10, None, True, "size 5000 != expected 5010"),
    (-1, None, True, "size 5000 != expected 4999"),
    (0, "grow", True, "size 5004 != expected 5000"),  # while its other ranges are copied
    (0, "shrink", True, "size 1024 != expected 5000"),
])
def test_size_mismatch_fails_the_file(tmp_path, declared, mutate, ranges, reason):
    (tmp_path / "src").mkdir()
    path = tmp_path / "src" / "data.bin"
    path.write_bytes(random.randbytes(5000))
    (tmp_path / "src" / "ok").write_text("ok")
    source = local_source(str(tmp_path / "src"))
    if mutate == "grow":
        after_first_range(source, lambda: grow(path))
    elif mutate == "shrink":
        after_first_range(source, lambda: os.truncate(path, 1024))
    files = [SourceFile("data.bin", 5000 + declared), SourceFile("ok", 2)]
    task = CopyTask(source, files, tmp_path / "cache", workers=1,
                    large_file=1000 if ranges else 10**6, chunk_size=512)
    with pytest.raises(CopyError) as caught:
        task.run()
    assert (caught.value.rel, caught.value.reason) == ("data.bin", reason)
    assert "data.bin" not in os.listdir(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.labdeck-part"))


@pytest.mark.parametrize("algorithm, good", [("sha256", True), ("sha256", False), ("md5", False),
                                              ("MD5", True)])
@pytest.mark.parametrize("large_file", [10**6, 1000])  # whole file, then ranges
def test_checksum_is_verified(tmp_path, algorithm, good, large_file):
    data = random.randbytes(5000)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data.bin").write_bytes(data)
    hexdigest = hashlib.new(algorithm.lower(), data if good else b"other").hexdigest()
    files = [SourceFile("data.bin", 5000, (algorithm, hexdigest))]
    task = CopyTask(local_source(str(tmp_path / "src")), files, tmp_path / "cache",
                    large_file=large_file, chunk_size=700)
    if good:
        task.run()
        assert (tmp_path / "cache" / "data.bin").read_bytes() == data
    else:
        with pytest.raises(CopyError, match=f"data.bin: {algorithm} mismatch"):
            task.run()
        assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("link", ["/etc/hostname", "../outside", "../outside/nothing", "/"])
def test_symlinks_out_of_the_root_are_refused(tmp_path, link):
    (tmp_path / "outside").mkdir()
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "ok").write_text("ok")
    (tmp_path / "src" / "a" / "escape").symlink_to(link if link.startswith("/") else f"../{link}")
    with pytest.raises(CopyError) as caught:
        local_source(str(tmp_path / "src")).scan()
    assert caught.value.rel == "a/escape" and "outside" in caught.value.reason


@pytest.fixture(params=["openat2", "realpath"])
def resolve(request, monkeypatch):
    """Each way the engine keeps opens inside the root: the kernel's openat2, or (old kernels,
    seccomp) the real path of each file."""
    if request.param == "realpath":
        monkeypatch.setattr(cache_local._LocalSource, "beneath", False)
    return request.param


def test_a_folder_turned_into_a_symlink_after_the_scan_is_refused(tmp_path, resolve):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "f").write_text("mine")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("secret")
    source = local_source(str(tmp_path / "src"))
    files = source.scan()
    os.rename(tmp_path / "src" / "a", tmp_path / "moved")
    (tmp_path / "src" / "a").symlink_to(tmp_path / "outside")
    with pytest.raises(CopyError, match="a/f: is a symlink that leads outside"):
        CopyTask(source, files, tmp_path / "cache").run()


@pytest.mark.parametrize("rel", ["", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a/"])
def test_paths_that_leave_the_target_are_refused(tmp_path, rel):
    with pytest.raises(CopyError, match="is not a path inside the source"):
        CopyTask(local_source(str(tmp_path)), [SourceFile(rel, 1)], tmp_path / "cache")


def test_progress_rate_is_zero_before_data():
    progress = Progress(bytes_done=10 * MiB, files_done=3)  # pre-loaded on resume: not a rate
    assert progress.rate() == 0 and progress.snapshot() == (10 * MiB, 3)
    progress.add(bytes=MiB, files=1)
    assert progress.rate() > 0 and progress.snapshot() == (11 * MiB, 4)


# ---------------------------------------------------------------- HTTP


PAYLOAD = random.Random(7).randbytes(3 * MiB + 123)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def http_server():
    """start(**options) serves PAYLOAD on 127.0.0.1; returns (url, log of (method, Range))."""
    servers = []

    def start(*, length=True, ranges=True, headers=(), pair_first_ranges=False, payload=PAYLOAD,
              cut=False):
        log, paired, lock = [], threading.Barrier(2, timeout=10), threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body):
                asked = self.headers.get("Range") if ranges else None
                with lock:
                    log.append((self.command, asked))
                    ranged_count = sum(1 for _, r in log if r)
                data, status = payload, 200
                if asked:
                    first, last = map(int, asked.removeprefix("bytes=").split("-"))
                    data, status = payload[first:last + 1], 206
                    if pair_first_ranges and ranged_count <= 2:
                        paired.wait()  # fails unless two ranges are fetched at the same time
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{len(payload)}")
                if length:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.close_connection = True
                self.end_headers()
                if body:
                    self.wfile.write(data[:len(data) // 2] if cut else data)
                    self.close_connection = self.close_connection or cut

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/sets/train%20data.bin", log

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


SHA256 = hashlib.sha256(PAYLOAD).digest()
MD5 = hashlib.md5(PAYLOAD).digest()


@pytest.mark.parametrize("ranges, headers, checksum", [
    (True, [("Digest", f"sha-256={b64(SHA256)}")], ("sha256", SHA256.hex())),
    (True, [("Repr-Digest", f"sha-256=:{b64(SHA256)}:, md5=:{b64(MD5)}:")], ("sha256", SHA256.hex())),
    (False, [("Content-MD5", b64(MD5))], ("md5", MD5.hex())),
    (False, [], None),
])
def test_http_source_copies_in_parallel_ranges(http_server, tmp_path, ranges, headers, checksum):
    url, log = http_server(ranges=ranges, headers=headers, pair_first_ranges=ranges)
    files = cache_sources.http_source(url).scan()
    assert files == [SourceFile("train data.bin", len(PAYLOAD), checksum)]
    resumed = cache_sources.http_source(url)  # as after a restart: the file list comes from the database
    CopyTask(resumed, files, tmp_path / "cache", workers=4, large_file=MiB, chunk_size=256 * 1024).run()
    assert (tmp_path / "cache" / "train data.bin").read_bytes() == PAYLOAD
    gets = [asked for method, asked in log if method == "GET"]
    assert len(gets) == (13 if ranges else 1) and all(gets) == ranges


@pytest.mark.parametrize("options, reason", [
    (dict(length=False), "sends no Content-Length"),
    (dict(headers=[("Digest", f"sha-256={b64(hashlib.sha256(b'x').digest())}")]), "sha256 mismatch"),
    (dict(headers=[("Content-MD5", b64(hashlib.md5(b"x").digest()))], ranges=False), "md5 mismatch"),
    (dict(payload=b""), "size 0 != expected"),  # changed between scan and copy
    (dict(cut=True), "cannot read http://127.0.0.1:[0-9]+/sets/train%20data.bin: ChunkedEncodingError"),
    (dict(cut=True, ranges=False), "cannot read .*: ChunkedEncodingError"),  # the connection broke
])
def test_http_source_refusals(http_server, tmp_path, options, reason):
    options = dict(options)
    payload = options.pop("payload", None)
    url, _ = http_server(**options)
    source = cache_sources.http_source(url)
    with pytest.raises(CopyError, match=reason) as caught:
        files = source.scan()
        if payload is not None:
            url, _ = http_server(payload=payload)
            source = cache_sources.http_source(url)
        CopyTask(source, files, tmp_path / "cache", large_file=MiB, chunk_size=MiB).run()
    assert caught.value.rel == "train data.bin"
    assert not list((tmp_path / "cache").rglob("*.labdeck-part"))


def test_http_redirects_are_not_followed(tmp_path):
    class Redirect(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(302)
            self.send_header("Location", "http://elsewhere.example/x")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CopyError, match="redirects to http://elsewhere.example/x"):
            cache_sources.http_source(f"http://127.0.0.1:{server.server_port}/x").scan()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("headers, expected", [
    ({"Digest": "SHA-256=" + b64(SHA256)}, ("sha256", SHA256.hex())),
    ({"Digest": "md5=" + b64(MD5) + ", sha-256=" + b64(SHA256)}, ("sha256", SHA256.hex())),
    ({"Content-MD5": MD5.hex()}, ("md5", MD5.hex())),
    ({"Content-MD5": "not base64!"}, None),
    ({"Digest": "sha-256=" + b64(MD5)}, None),  # wrong length
    ({"Digest": "unixsum=1234"}, None),
])
def test_http_checksum_headers(headers, expected):
    assert cache_sources._http_checksum(headers) == expected


# ---------------------------------------------------------------- fsspec


@pytest.mark.parametrize("info, expected", [
    ({"md5": MD5.hex()}, ("md5", MD5.hex())),
    ({"md5Hash": b64(MD5)}, ("md5", MD5.hex())),  # gcsfs
    ({"content_settings": {"content_md5": bytearray(MD5)}}, ("md5", MD5.hex())),  # adlfs
    ({"ChecksumSHA256": b64(SHA256)}, ("sha256", SHA256.hex())),
    ({"ETag": f'"{MD5.hex()}"'}, ("md5", MD5.hex())),  # a single-part S3 upload
    ({"ETag": f'"{MD5.hex()}-3"'}, None),  # multipart: not a digest of the data
    ({"ETag": f'W/"{MD5.hex()}"'}, None),  # weak
    ({"ETag": f'"{MD5.hex()}"', "ServerSideEncryption": "aws:kms"}, None),
    ({"ETag": "1699999-abc"}, None),
    ({"size": 3}, None),
])
def test_fsspec_checksum_only_from_real_digests(info, expected):
    assert cache_sources._fsspec_checksum(info) == expected


def test_fsspec_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    with pytest.raises(CopyError, match="fsspec is not installed"):
        cache_sources.fsspec_source("s3://bucket/data")


@pytest.mark.parametrize("protocol", ["memory", "file"])  # whole files; parallel ranges
def test_fsspec_source(tmp_path, protocol):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem(protocol)
    root = "/sets" if protocol == "memory" else f"{tmp_path}/sets"
    data = {"a/x.bin": random.randbytes(3 * MiB), "a/b/y.txt": b"y", "empty": b""}
    for rel, content in data.items():
        fs.makedirs(f"{root}/{rel}".rpartition("/")[0], exist_ok=True)
        fs.pipe(f"{root}/{rel}", content)
    try:
        source = cache_sources.fsspec_source(f"{protocol}://{root}")
        files = source.scan()
        assert [(f.rel, f.size) for f in files] == [("a/b/y.txt", 1), ("a/x.bin", 3 * MiB), ("empty", 0)]
        CopyTask(source, files, tmp_path / "cache", workers=3, large_file=MiB, chunk_size=512 * 1024).run()
        single = cache_sources.fsspec_source(f"{protocol}://{root}/a/b/y.txt")
        CopyTask(single, single.scan(), tmp_path / "one").run()
        with pytest.raises(CopyError, match="size 1 != expected 2"):
            CopyTask(single, [SourceFile("y.txt", 2)], tmp_path / "two").run()
    finally:
        fs.rm(root, recursive=True)
    assert contents(tmp_path / "cache") == {rel: hashlib.blake2b(c).hexdigest() for rel, c in data.items()}
    assert (tmp_path / "one" / "y.txt").read_bytes() == b"y"


def test_max_rate_paces_the_copy_and_cancel_still_stops_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(b"x" * 2**18)  # 10 MiB in all
    source = local_source(str(src))
    files = source.scan()
    progress = Progress()
    task = CopyTask(source, files, tmp_path / "dst", progress=progress, max_rate=20 * 2**20)
    thread = threading.Thread(target=task.run)
    thread.start()
    time.sleep(0.2)
    partway = progress.snapshot()[0]
    thread.join(10)
    assert 0 < partway < 10 * 2**20  # 10 MiB at 20 MiB/s cannot be done in 0.2 s
    assert progress.snapshot() == (10 * 2**20, 40)
    cancel = threading.Event()
    slow = CopyTask(source, files, tmp_path / "dst2", cancel=cancel, max_rate=2**20)
    thread = threading.Thread(target=slow.run)
    thread.start()
    time.sleep(0.3)
    cancel.set()
    thread.join(2)
    assert not thread.is_alive()  # stopped within the pacing's quarter second, not after 10 s


def test_copies_run_at_a_background_priority(tmp_path):
    """The service shares the hub's heavy CPU group: its copy threads must not take that
    weight from the hub's requests (services/cpu_groups.py)."""
    root = tmp_path / "src"
    root.mkdir()
    for i in range(4):
        (root / f"f{i}").write_bytes(os.urandom(64 * 1024))
    source = local_source(str(root))
    seen, copy_range = set(), source.copy_range

    def noting(*args, **kwargs):
        seen.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return copy_range(*args, **kwargs)

    source.copy_range = noting
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    copy(source, tmp_path / "cache", large_file=1, chunk_size=16 * 1024)
    assert seen == {max(before, BACKGROUND_NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
