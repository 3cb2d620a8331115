"""Accounts and the sign-in throttle: pure logic over a throwaway SQLite database."""

import pytest
from argon2 import PasswordHasher

from services.accounts import AccountStore, LoginThrottle
from services.db import Database
from services.errors import OptionError
from services.models import AccountStatus

# cheap argon2id parameters keep these tests fast; one test checks the upgrade to the real ones
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse 1"


@pytest.fixture
def store(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'accounts.sqlite'}")
    db.create_schema()
    yield AccountStore(db, hasher=FAST)
    db.dispose()


@pytest.fixture
def alice(store):
    return store.create("alice", "Alice@Example.org", PASSWORD)


@pytest.mark.parametrize(
    "username, email, password, field, words",
    [
        ("", "a@example.org", PASSWORD, "username", "1–32 characters"),
        ("a" * 33, "a@example.org", PASSWORD, "username", "1–32 characters"),
        ("-alice", "a@example.org", PASSWORD, "username", "starting with a letter or digit"),
        ("al ice", "a@example.org", PASSWORD, "username", "lowercase letters, digits, '.', '_' or '-'"),
        ("al/ice", "a@example.org", PASSWORD, "username", "lowercase letters"),
        ("alice@x", "a@example.org", PASSWORD, "username", "lowercase letters"),
        ("alice", "", PASSWORD, "email", "e-mail address like name@example.org"),
        ("alice", "alice", PASSWORD, "email", "e-mail address"),
        ("alice", "alice@localhost", PASSWORD, "email", "e-mail address"),
        ("alice", "al ice@example.org", PASSWORD, "email", "e-mail address"),
        ("alice", "a@b@example.org", PASSWORD, "email", "e-mail address"),
        ("alice", "a@example.org", "", "password", "at least 8 characters"),
        ("alice", "a@example.org", "short12", "password", "at least 8 characters"),
        ("alice", "a@example.org", "x" * 1025, "password", "at most 1024 characters"),
        ("alicelong", "a@example.org", "AliceLong", "password", "not be your user name or e-mail"),
        ("alice", "a@example.org", "A@example.org", "password", "not be your user name or e-mail"),
    ],
)
def test_create_refuses_invalid_input_naming_the_field(store, username, email, password, field, words):
    with pytest.raises(OptionError) as e:
        store.create(username, email, password)
    assert e.value.field == field
    assert words in e.value.message
    assert store.all() == []


def test_min_password_length_is_configurable(store):
    store.min_password_length = 12
    with pytest.raises(OptionError, match="at least 12 characters"):
        store.create("alice", "a@example.org", "elevenchars")
    assert store.create("alice", "a@example.org", "twelve chars").username == "alice"


def test_confirmation_must_match(store):
    with pytest.raises(OptionError) as e:
        store.create("alice", "a@example.org", PASSWORD, password_confirm=PASSWORD + "!")
    assert (e.value.field, e.value.message) == ("password_confirm", "The two passwords do not match.")


@pytest.mark.parametrize(
    "username, email, field, message",
    [
        ("alice", "other@example.org", "username", "The user name 'alice' is already taken."),
        ("ALICE", "other@example.org", "username", "The user name 'alice' is already taken."),
        ("bob", "alice@example.org", "email", "An account with this e-mail address already exists."),
        ("bob", "ALICE@EXAMPLE.ORG", "email", "An account with this e-mail address already exists."),
    ],
)
def test_duplicates_are_refused(store, alice, username, email, field, message):
    with pytest.raises(OptionError) as e:
        store.create(username, email, PASSWORD)
    assert (e.value.field, e.value.message) == (field, message)
    assert [a.username for a in store.all()] == ["alice"]


def test_stores_an_argon2id_hash_never_the_password(store):
    account = store.create(" Alice ", "Alice@Example.org", PASSWORD)
    assert (account.username, account.email) == ("alice", "alice@example.org")
    stored = store.get("alice").password_hash
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert account.status == AccountStatus.active.value


@pytest.mark.parametrize("login", ["alice", "ALICE", " alice ", "alice@example.org", "Alice@EXAMPLE.org"])
def test_verify_by_name_or_email_any_case(store, alice, login):
    assert store.find_by_login(login).username == "alice"
    assert store.verify(login, PASSWORD).username == "alice"


@pytest.mark.parametrize(
    "login, password",
    [
        ("alice", "wrong password"),
        ("alice", PASSWORD.upper()),
        ("alice", ""),
        ("nobody", PASSWORD),
        ("nobody@example.org", PASSWORD),
        ("", PASSWORD),
    ],
)
def test_verify_refuses_wrong_password_or_unknown_login(store, alice, login, password):
    assert store.verify(login, password) is None


def test_verify_returns_pending_accounts_so_the_caller_can_explain(store):
    store.create("bob", "bob@example.org", PASSWORD, AccountStatus.pending)
    assert store.verify("bob", PASSWORD).status == "pending"
    assert [a.username for a in store.pending()] == ["bob"]


def test_verify_upgrades_a_weak_hash(store, alice):
    old_hash = store.get("alice").password_hash
    store.hasher = PasswordHasher()  # the library's current (stronger) parameters
    assert store.verify("alice", PASSWORD).username == "alice"
    new_hash = store.get("alice").password_hash
    assert new_hash != old_hash and new_hash.startswith("$argon2id$")
    assert not store.hasher.check_needs_rehash(new_hash)
    assert store.verify("alice", PASSWORD) is not None


def test_change_password(store, alice):
    before = store.get("alice").password_changed_at
    store.change_password("alice", PASSWORD, "a new secret 2", password_confirm="a new secret 2")
    assert store.verify("alice", PASSWORD) is None
    assert store.verify("alice@example.org", "a new secret 2").username == "alice"
    assert store.get("alice").password_changed_at >= before


@pytest.mark.parametrize(
    "current, new, confirm, field, words",
    [
        ("wrong", "a new secret 2", "a new secret 2", "current_password", "not correct"),
        (PASSWORD, "short", "short", "password", "at least 8 characters"),
        (PASSWORD, "alice@example.org", "alice@example.org", "password", "not be your user name"),
        (PASSWORD, "a new secret 2", "a new secret 3", "password_confirm", "do not match"),
    ],
)
def test_change_password_refusals_keep_the_old_password(store, alice, current, new, confirm, field, words):
    with pytest.raises(OptionError) as e:
        store.change_password("alice", current, new, password_confirm=confirm)
    assert e.value.field == field and words in e.value.message
    assert store.verify("alice", PASSWORD) is not None


def test_admin_reset_sets_a_new_password(store, alice):
    store.set_password("alice", "reset by admin 3")
    assert store.verify("alice", "reset by admin 3") is not None
    assert store.verify("alice", PASSWORD) is None
    with pytest.raises(OptionError, match="at least 8"):
        store.set_password("alice", "short")


def test_approve_and_reject(store):
    store.create("bob", "bob@example.org", PASSWORD, AccountStatus.pending)
    store.create("carol", "carol@example.org", PASSWORD, "pending")
    approved = store.approve("bob", by="admin")
    assert (approved.status, approved.approved_by) == ("active", "admin")
    rejected = store.reject("carol", by="admin")
    assert (rejected.status, rejected.approved_by) == ("rejected", "admin")
    assert store.pending() == []
    assert {a.username: a.status for a in store.all()} == {"bob": "active", "carol": "rejected"}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.approve("ghost", by="admin"),
        lambda s: s.reject("ghost", by="admin"),
        lambda s: s.set_password("ghost", "long enough 1"),
        lambda s: s.change_password("ghost", PASSWORD, "long enough 1"),
    ],
)
def test_changes_to_a_missing_account_name_it(store, call):
    with pytest.raises(OptionError) as e:
        call(store)
    assert (e.value.field, e.value.message) == ("username", "There is no account named 'ghost'.")


def test_delete(store, alice):
    assert store.delete("ALICE") is True
    assert store.get("alice") is None and store.verify("alice", PASSWORD) is None
    assert store.delete("alice") is False
    # the name and the address are free again
    assert store.create("alice", "alice@example.org", PASSWORD).username == "alice"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def throttle(clock):
    return LoginThrottle(free_attempts=5, window=900, base_delay=2, max_delay=300, clock=clock)


@pytest.mark.parametrize(
    "failures, wait",
    [(0, 0), (1, 0), (4, 0), (5, 2), (6, 4), (7, 8), (8, 16), (12, 256), (13, 300), (30, 300)],
)
def test_throttle_delay_doubles_after_the_free_attempts(throttle, failures, wait):
    for _ in range(failures):
        throttle.failure("alice")
    assert throttle.retry_after("alice") == wait


def test_throttle_wait_counts_down_from_the_last_failure(throttle, clock):
    for _ in range(6):
        throttle.failure("alice")
    clock.now += 1.5
    assert throttle.retry_after("alice") == pytest.approx(2.5)
    clock.now += 2.5
    assert throttle.retry_after("alice") == 0
    throttle.failure("alice")  # the 7th failure
    assert throttle.retry_after("alice") == 8


def test_throttle_keys_are_independent_and_success_forgets(throttle):
    for _ in range(5):
        throttle.failure("alice")
    assert throttle.retry_after("alice") == 2
    assert throttle.retry_after("bob") == 0
    throttle.success("alice")
    assert throttle.retry_after("alice") == 0


def test_throttle_forgets_failures_after_the_window(throttle, clock):
    for _ in range(5):
        throttle.failure("alice")
        clock.now += 60
    # the first failure is now 300 s old; after 600 s more it leaves the 900 s window
    clock.now += 600
    assert throttle.retry_after("alice") == 0
    throttle.failure("alice")
    assert throttle.retry_after("alice") == 2  # 5 failures inside the window again
    clock.now += 900
    assert throttle.retry_after("alice") == 0
    assert throttle._failures == {}
