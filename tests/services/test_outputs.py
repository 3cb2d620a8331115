"""Reading a job's output folder and log (services/outputs.py): escapes refused, bounded reads."""

import hashlib
import io
import os
import tarfile
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

from services import output_archive, outputs
from services.errors import OptionError

MiB = 1024 * 1024
ODD = os.fsdecode(b"odd \xff name")  # not UTF-8: a job may write any bytes as a name


@pytest.fixture
def job(tmp_path):
    """<tmp>/job/output as a job leaves it, with a secret beside it and a folder outside."""
    out = tmp_path / "job" / "output"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "deep.txt").write_text("deep\n")
    (out / "notes.txt").write_text("notes\n")
    (out / "Zeta").mkdir()
    (out / "bin.dat").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (out / ODD).write_text("odd\n")
    (tmp_path / "job" / "secret.txt").write_text("secret\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("x\n")
    links = {"inside": "a/b/deep.txt", "dirlink": "a", "etc": "/etc", "up": "../secret.txt",
             "away": str(tmp_path / "outside"), "loop": "loop", "dangling": "a/none.txt"}
    for name, target in links.items():
        (out / name).symlink_to(target)
    os.mkfifo(out / "fifo")
    return SimpleNamespace(out=out, tmp=tmp_path)


# ---------------------------------------------------------------- resolve


@pytest.mark.parametrize("relative, expected", [
    ("", "."),
    ("notes.txt", "notes.txt"),
    ("a/b/deep.txt", "a/b/deep.txt"),
    ("./a//b/", "a/b"),
    ("inside", "a/b/deep.txt"),
    ("dirlink/b/deep.txt", "a/b/deep.txt"),
    (ODD, ODD),
    ("../secret.txt", "refused: must not contain '..'"),
    ("a/../../secret.txt", "refused: must not contain '..'"),
    ("a/..", "refused: must not contain '..'"),
    ("/etc/passwd", "refused: /etc/passwd is absolute"),
    ("etc", "refused: etc leads outside the folder"),
    ("etc/passwd", "refused: etc/passwd leads outside the folder"),
    ("up", "refused: up leads outside the folder"),
    ("away/x.txt", "refused: away/x.txt leads outside the folder"),
    ("notes.txt\0", "refused: must not contain NUL bytes or control characters"),
    ("new\nline", "refused: must not contain NUL bytes or control characters"),
    ("missing.txt", "missing"),
    ("dangling", "missing"),
])
def test_resolve(job, relative, expected):
    if expected.startswith("refused: "):
        with pytest.raises(OptionError) as refused:
            outputs.resolve(job.out, relative)
        assert refused.value.field == "path"
        assert expected.removeprefix("refused: ") in refused.value.message
    elif expected == "missing":
        with pytest.raises(FileNotFoundError):
            outputs.resolve(job.out, relative)
    else:
        assert outputs.resolve(job.out, relative) == (job.out / expected).resolve()


def test_a_descriptor_outside_the_folder_is_refused_even_when_the_path_check_was_passed(job):
    # what a directory swapped for a symlink between resolve() and open() amounts to
    with pytest.raises(OptionError, match="leads outside the folder"):
        outputs.open_file(job.tmp / "job" / "secret.txt", root=job.out)
    with pytest.raises(OptionError, match="leads outside the folder"):
        outputs.read_preview(job.tmp / "outside" / "x.txt", root=job.out)


# ---------------------------------------------------------------- listing


def test_listing_shows_folders_first_then_names_and_links_as_links(job):
    listing = outputs.list_dir(job.out, "")
    assert [(e.name, e.kind) for e in listing.entries] == [
        ("a", "dir"), ("Zeta", "dir"), ("away", "link"), ("bin.dat", "file"), ("dangling", "link"),
        ("dirlink", "link"), ("etc", "link"), ("fifo", "other"), ("inside", "link"), ("loop", "link"),
        ("notes.txt", "file"), (ODD, "file"), ("up", "link")]
    by_name = {e.name: e for e in listing.entries}
    assert (by_name["etc"].target, by_name["etc"].size) == ("/etc", 0)
    assert {e.name: e.leads_to for e in listing.entries if e.kind == "link"} == {
        "away": "", "dangling": "", "dirlink": "dir", "etc": "", "inside": "file", "loop": "", "up": ""}
    assert (by_name["notes.txt"].size, by_name["notes.txt"].path) == (6, "notes.txt")
    assert by_name["notes.txt"].modified == pytest.approx((job.out / "notes.txt").stat().st_mtime)
    assert (listing.truncated, listing.total) == (False, 13)


@pytest.mark.parametrize("relative, names", [
    ("a", [("b", "a/b")]),
    ("a/b/", [("deep.txt", "a/b/deep.txt")]),
    ("dirlink/b", [("deep.txt", "dirlink/b/deep.txt")]),  # a link inside is followed to list it
    ("Zeta", []),
])
def test_listing_a_sub_folder_gives_paths_relative_to_the_root(job, relative, names):
    assert [(e.name, e.path) for e in outputs.list_dir(job.out, relative).entries] == names


def test_a_large_folder_is_listed_up_to_the_limit_with_a_flag(job):
    many = job.out / "many"
    many.mkdir()
    for i in range(30):
        (many / f"f{i:02d}").write_text("")
    (many / "sub").mkdir()
    listing = outputs.list_dir(job.out, "many", limit=5)
    assert [e.name for e in listing.entries] == ["sub", "f00", "f01", "f02", "f03"]
    assert (listing.truncated, listing.total) == (True, 31)


@pytest.mark.parametrize("relative, error", [
    ("notes.txt", "is not a folder"), ("etc", "leads outside"), ("loop", "symbolic link loop")])
def test_listing_what_is_not_an_inside_folder_is_refused(job, relative, error):
    with pytest.raises(OptionError, match=error):
        outputs.list_dir(job.out, relative)


# ---------------------------------------------------------------- preview


@pytest.mark.parametrize("content, limit, text, truncated", [
    (b"hello\n", 64, "hello\n", False),
    (b"x" * 64, 64, "x" * 64, False),
    (b"x" * 100, 64, "x" * 64, True),
    ("é".encode() * 40, 63, "é" * 31, True),  # a character cut by the limit is left out, not garbled
    (("café au lait, " * 4).encode("latin-1"), 200, "caf\ufffd au lait, " * 4, False),  # Latin-1: still text
    (b"\x00\x01\x02text", 64, None, False),
    (bytes(range(256)) * 4, 4096, None, False),
    (b"", 64, "", False),
])
def test_preview(tmp_path, content, limit, text, truncated):
    path = tmp_path / "f"
    path.write_bytes(content)
    preview = outputs.read_preview(path, limit, root=tmp_path)
    assert (preview.text, preview.truncated, preview.size) == (text, truncated, len(content))


def test_preview_of_a_fifo_is_refused_without_blocking(job):
    with pytest.raises(OptionError, match="not a regular file"):
        outputs.read_preview(outputs.resolve(job.out, "fifo"), root=job.out)


def test_preview_never_reads_more_than_its_limit(tmp_path):
    big = tmp_path / "big.log"
    with open(big, "wb") as f:
        f.truncate(300 * MiB)
    tracemalloc.start()
    try:
        preview = outputs.read_preview(big, root=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (preview.truncated, preview.size) == (True, 300 * MiB)
    assert peak < 1 * MiB


# ---------------------------------------------------------------- following a log


def test_read_from_follows_a_growing_file(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"one\n")
    chunk = outputs.read_from(log, 0)
    assert (chunk.data, chunk.next_offset, chunk.size, chunk.reset) == (b"one\n", 4, 4, False)
    assert outputs.read_from(log, 4).data == b""
    with open(log, "ab") as f:
        f.write(b"two\nthree\n")
    chunk = outputs.read_from(log, 4, limit=6)
    assert (chunk.data, chunk.offset, chunk.next_offset, chunk.size) == (b"two\nth", 4, 10, 14)
    chunk = outputs.read_from(log, chunk.next_offset, limit=6)
    assert (chunk.data, chunk.next_offset) == (b"ree\n", 14)


def test_read_from_waits_for_the_rest_of_a_character(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes("ok €".encode()[:-1])  # the writer is halfway through "€"
    chunk = outputs.read_from(log, 0)
    assert (chunk.data, chunk.next_offset) == (b"ok ", 3)
    with open(log, "ab") as f:
        f.write("€".encode()[-1:] + b"\n")
    assert outputs.read_from(log, 3).data.decode() == "€\n"


def test_read_from_starts_again_when_the_file_was_replaced(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"a long first run\n")
    offset = outputs.read_from(log, 0).next_offset
    log.write_bytes(b"rerun\n")
    chunk = outputs.read_from(log, offset)
    assert (chunk.data, chunk.offset, chunk.next_offset, chunk.reset) == (b"rerun\n", 0, 6, True)


def test_read_from_without_offset_gives_the_tail_from_a_whole_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_bytes(b"".join(b"line %03d\n" % i for i in range(100)))  # 9 bytes a line
    chunk = outputs.read_from(log, None, limit=30)
    assert chunk.data == b"line 097\nline 098\nline 099\n"
    assert (chunk.offset, chunk.next_offset, chunk.size) == (873, 900, 900)
    assert outputs.read_from(log, None, limit=5000).data.startswith(b"line 000\n")


def test_read_from_refuses_a_negative_offset(tmp_path):
    (tmp_path / "log.txt").write_text("x")
    with pytest.raises(OptionError, match="offset: must be 0 or more"):
        outputs.read_from(tmp_path / "log.txt", -1)


# ---------------------------------------------------------------- archive


def tree_of(root: Path) -> dict:
    """What a user sees in a folder: files' bytes, links' text, folders (not following links)."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir",)
            elif path.is_file():
                seen[rel] = ("file", path.read_bytes())
    return seen


def test_archive_extracts_to_the_same_files_with_links_stored_as_links(job, tmp_path):
    data = b"".join(output_archive.archive_chunks(job.out, "", top="job-1"))
    dest = tmp_path / "extracted"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        tar.extractall(dest, filter="tar")
    assert members["job-1/etc"].issym() and members["job-1/etc"].linkname == "/etc"
    assert members["job-1/up"].issym() and members["job-1/up"].linkname == "../secret.txt"
    assert "job-1/fifo" not in members  # not a file: left out
    expected = tree_of(job.out)
    assert "fifo" not in expected
    assert tree_of(dest / "job-1") == expected


def test_archive_of_a_sub_folder(job):
    data = b"".join(output_archive.archive_chunks(job.out, "a"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert [(m.name, m.isdir()) for m in tar.getmembers()] == [("a", True), ("a/b", True), ("a/b/deep.txt", False)]
        assert tar.extractfile("a/b/deep.txt").read() == b"deep\n"


@pytest.mark.parametrize("relative, error", [("../", OptionError), ("etc", OptionError), ("none", FileNotFoundError)])
def test_archive_refuses_before_producing_anything(job, relative, error):
    with pytest.raises(error):
        output_archive.archive_chunks(job.out, relative)


def test_archive_of_a_huge_file_streams_with_bounded_memory(tmp_path):
    out = tmp_path / "output"
    out.mkdir()
    size = 200 * MiB
    with open(out / "weights.bin", "wb") as f:  # sparse, with data at both ends and in the middle
        f.write(b"start")
        f.seek(size // 2)
        f.write(b"middle")
        f.seek(size - 3)
        f.write(b"end")
    (out / "small.txt").write_text("small\n")
    expected = hashlib.sha256()
    with open(out / "weights.bin", "rb") as f:
        while block := f.read(MiB):
            expected.update(block)

    compressed = io.BytesIO()  # ~200 KiB: zeros compress well
    tracemalloc.start()
    try:
        for chunk in output_archive.archive_chunks(out, ""):
            compressed.write(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"

    compressed.seek(0)
    got = {}
    with tarfile.open(fileobj=compressed, mode="r|gz") as tar:
        for member in tar:
            if member.isfile():
                sha, f = hashlib.sha256(), tar.extractfile(member)
                while block := f.read(MiB):
                    sha.update(block)
                got[member.name] = (member.size, sha.hexdigest())
    assert got == {"output/weights.bin": (size, expected.hexdigest()),
                   "output/small.txt": (6, hashlib.sha256(b"small\n").hexdigest())}


def test_stopping_an_archive_early_closes_what_it_opened(job):
    before = len(os.listdir("/proc/self/fd"))
    (job.out / "big.bin").write_bytes(os.urandom(4 * MiB))  # enough to yield more than one chunk
    chunks = output_archive.archive_chunks(job.out, "")
    assert next(chunks)
    chunks.close()
    assert len(os.listdir("/proc/self/fd")) == before


# ---------------------------------------------------------------- removal


@pytest.fixture
def jobs_dir(tmp_path):
    base = tmp_path / "jobs"
    (base / "alice" / "job-1" / "output" / "sub").mkdir(parents=True)
    (base / "alice" / "job-1" / "log.txt").write_text("log\n")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("keep me\n")
    (base / "alice" / "job-1" / "output" / "keep").symlink_to(tmp_path / "keep")
    (base / "alice" / "alias").symlink_to(tmp_path / "keep")
    return base


@pytest.mark.parametrize("path, removed", [
    ("alice/job-1", True),
    ("alice/job-1/log.txt", True),
    ("alice/job-9", False),
    ("alice/alias", True),  # the link itself, not what it points to
])
def test_remove_tree_removes_below_the_base_and_never_follows_links(jobs_dir, path, removed):
    assert outputs.remove_tree(jobs_dir / path, jobs_dir) is removed
    assert not os.path.lexists(jobs_dir / path)
    assert (jobs_dir.parent / "keep" / "precious.txt").read_text() == "keep me\n"
    assert (jobs_dir / "alice").is_dir()


@pytest.mark.parametrize("path", ["", ".", "..", "../keep", "alice/../..", "alice/alias/precious.txt", "/etc"])
def test_remove_tree_refuses_what_is_not_below_the_base(jobs_dir, path):
    with pytest.raises(ValueError, match="refusing to remove"):
        outputs.remove_tree(jobs_dir / path, jobs_dir)
    assert (jobs_dir.parent / "keep" / "precious.txt").exists()
    assert (jobs_dir / "alice" / "job-1" / "log.txt").exists()
