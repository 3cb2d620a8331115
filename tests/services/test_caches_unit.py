"""Cache domain logic that needs no Docker: storing odd file names, URL policy."""

import pytest
from traitlets.config import Config

from services.caches import CacheSettings, check_url, load_rel, store_rel
from services.errors import OptionError


@pytest.mark.parametrize("rel", ["a/b.txt", "naïve/日本.bin", "b64:looks-encoded", "bad-\udcff-name", ""])
def test_file_names_round_trip_through_the_database_form(rel):
    stored = store_rel(rel)
    stored.encode("utf-8")  # always storable as UTF-8 text
    assert load_rel(stored) == rel


def settings(urls):
    c = Config()
    c.CacheSettings.allowed_urls = urls
    return CacheSettings(config=c)


URLS = ["http://127.0.0.1:8080/data/", "https://data.example.org/sets/"]
CASES = [
    ("http://127.0.0.1:8080/data/x.bin", None),
    ("https://data.example.org/sets/imagenet/train.tar", None),
    ("ftp://127.0.0.1:8080/data/x", "the scheme 'ftp' is not allowed; allowed: http, https"),
    ("http://127.0.0.1:9999/data/x", "the host '127.0.0.1:9999' is not allowed"),
    ("https://evil.example.org/sets/x", "the host 'evil.example.org' is not allowed"),
    ("http://127.0.0.1:8080/other/x", "not under an allowed prefix"),
    ("http://127.0.0.1:8080/data/../secret", "not under an allowed prefix"),
]


@pytest.mark.parametrize("url, problem", CASES)
def test_url_policy(url, problem):
    if problem is None:
        assert check_url(settings(URLS), url) == url
    else:
        with pytest.raises(OptionError) as info:
            check_url(settings(URLS), url)
        assert str(info.value).startswith("source: ") and problem in str(info.value)


def test_urls_are_off_unless_the_admin_allows_some():
    with pytest.raises(OptionError, match="URLs are not enabled here"):
        check_url(settings([]), "https://example.org/x")
