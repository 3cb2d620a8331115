"""Remote-debug passwords: the rule a user must meet, and hashes the debug image's sshd checks."""

import re

import pytest

from services.errors import OptionError
from services.ssh_password import ROUNDS, check_password, crypt_hash, verify

FAST = 4  # bcrypt's lowest cost: same format, a thousandth of the time

ACCEPTED = [
    "abcdefgh",  # 8 characters, the shortest allowed
    "correct horse battery staple",
    " spaces at both ends ",
    "pässwörter-ünd-ßpaß",  # 2-byte letters
    "密码密码密码密码",  # 8 characters, 24 bytes
    "a" * 72,  # bcrypt's 72 bytes exactly
    "😀" * 18,  # 72 bytes in 4-byte characters
]

REFUSED = [
    # password, the rule the message names
    (None, "is required"),
    ("", "is required"),
    (12345678, "is required"),
    ("abcdefg", "at least 8 characters"),
    ("密码密码密码密", "at least 8 characters"),  # 21 bytes, but 7 characters
    ("a" * 73, "at most 72 bytes"),
    ("😀" * 19, "at most 72 bytes"),  # 19 characters, 76 bytes
    ("line\nbreak", "control characters"),
    ("tab\tinside", "control characters"),
    ("nul\x00inside", "control characters"),
    ("delete\x7fkey", "control characters"),
    ("c1\x85control", "control characters"),
    ("half\ud800a-character", "control characters"),
]


@pytest.mark.parametrize("password", ACCEPTED)
def test_accepted_passwords_hash_and_verify(password):
    check_password(password)
    hashed = crypt_hash(password, rounds=FAST)
    assert re.fullmatch(r"\$2b\$04\$[./A-Za-z0-9]{53}", hashed)
    assert password not in hashed
    assert verify(password, hashed)
    assert not verify(password[:-1] + ("b" if password[-1] != "b" else "c"), hashed)


@pytest.mark.parametrize("password, rule", REFUSED)
def test_refused_passwords_name_the_rule(password, rule):
    for refuse in (check_password, crypt_hash):
        with pytest.raises(OptionError) as caught:
            refuse(password)
        assert caught.value.field == "password"
        assert rule in caught.value.message
        if isinstance(password, str) and password:
            assert password not in str(caught.value)  # never echoed


def test_default_cost_and_fresh_salt():
    first, second = crypt_hash("correct horse 1"), crypt_hash("correct horse 1")
    assert first.startswith(f"$2b${ROUNDS:02d}$")
    assert first != second  # salted: equal passwords do not show
    assert verify("correct horse 1", first) and verify("correct horse 1", second)


def test_no_match_beyond_72_bytes():
    # bcrypt itself ignores what follows byte 72; a longer password must not match a shorter one's hash
    hashed = crypt_hash("a" * 72, rounds=FAST)
    assert not verify("a" * 72 + "b", hashed)


@pytest.mark.parametrize("malformed", [
    "",
    None,
    "not a hash",
    "$2b$04$tooshort",
    # sha512-crypt and yescrypt: valid for sshd, but not what this module makes or checks
    "$6$19lVi1rw2w5zVUG.$nQIH4Mun.wLmlAT3O0WFl3TaXgxmzb3c9Hw8tbi2FcNgLFsemLupzT2M//jKxfUuVSJKytdia0XFHXaOv4w3/1",
    "$y$j9T$CNWN35U9x097Vayw$pbD4/osYEjoJtFl4YmMzhCAo6mutosmPyvXdMX0CAq7",
    "$2b$04$ÿ" + "a" * 52,
])
def test_malformed_hashes_never_verify(malformed):
    assert verify("correct horse 1", malformed) is False
