"""LabdeckAuthenticator without a running hub: first admin, sign-in rules, throttle."""

import stat
from types import SimpleNamespace

import pytest
from argon2 import PasswordHasher
from tornado import web
from traitlets.config import Config

from services.models import AccountStatus
from spawner.authenticator import LabdeckAuthenticator

PASSWORD = "correct horse 1"


def make_authenticator(data_dir, **settings) -> LabdeckAuthenticator:
    config = Config()
    config.Platform.data_dir = str(data_dir)
    config.Authenticator.admin_users = {"admin"}
    for name, value in settings.items():
        setattr(config.LabdeckAuthenticator, name, value)
    return LabdeckAuthenticator(config=config)


@pytest.fixture
def auth(tmp_path):
    authenticator = make_authenticator(tmp_path)
    authenticator.accounts.hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    authenticator.accounts.create("alice", "alice@example.org", PASSWORD)
    return authenticator


def from_ip(ip="10.1.2.3"):
    return SimpleNamespace(request=SimpleNamespace(remote_ip=ip))


def test_first_admin_gets_an_account_and_a_private_password_file(tmp_path):
    auth = make_authenticator(tmp_path)
    password_file = tmp_path / "initial-admin-password"
    assert auth.initial_admin_password_file == str(password_file)
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 12
    admin = auth.accounts.verify("admin@labdeck.local", password)
    assert (admin.username, admin.status) == ("admin", "active")
    # a restart keeps the account and the file as they are
    again = make_authenticator(tmp_path)
    assert password_file.read_text().strip() == password
    assert again.accounts.verify("admin", password) is not None


def test_initial_admin_email_domain_is_configurable(tmp_path):
    auth = make_authenticator(tmp_path, initial_admin_email_domain="lab.example.org")
    assert auth.accounts.get("admin").email == "admin@lab.example.org"


async def test_password_file_is_deleted_once_the_admin_changed_the_password(tmp_path):
    auth = make_authenticator(tmp_path)
    password_file = tmp_path / "initial-admin-password"
    initial = password_file.read_text().strip()
    await auth.password_changed("admin")  # nothing changed yet
    assert password_file.exists()
    auth.accounts.change_password("admin", initial, "my own secret 9")
    await auth.password_changed("admin")
    assert not password_file.exists()
    # a restart does not write a new file: the admin already has an account
    make_authenticator(tmp_path)
    assert not password_file.exists()


@pytest.mark.parametrize("login", ["alice", "Alice", "alice@example.org", "ALICE@example.org"])
async def test_sign_in_with_email_or_user_name(auth, login):
    assert await auth.authenticate(from_ip(), {"username": login, "password": PASSWORD}) == {
        "name": "alice"
    }


@pytest.mark.parametrize(
    "data",
    [
        {"username": "alice", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "alice", "password": ""},
        {"username": "", "password": PASSWORD},
    ],
)
async def test_wrong_credentials_fail(auth, data):
    assert await auth.authenticate(from_ip(), data) is None


@pytest.mark.parametrize(
    "status, message",
    [
        (AccountStatus.pending, "Your account is waiting for an administrator's approval."),
        (AccountStatus.rejected, "Your account was not approved."),
    ],
)
async def test_accounts_that_are_not_active_are_told_why(auth, status, message):
    auth.accounts.create("bob", "bob@example.org", PASSWORD, status)
    with pytest.raises(web.HTTPError) as e:
        await auth.authenticate(from_ip(), {"username": "bob", "password": PASSWORD})
    assert e.value.status_code == 403 and message in e.value.log_message
    assert auth.check_allowed("bob") is False


def test_only_active_accounts_are_allowed(auth):
    assert auth.check_allowed("alice") is True
    assert auth.check_allowed("admin") is True
    assert auth.check_allowed("ghost") is False


async def test_repeated_failures_slow_down_even_the_right_password(auth):
    wrong = {"username": "alice", "password": "wrong password"}
    for _ in range(auth.throttle_free_attempts):
        assert await auth.authenticate(from_ip(), wrong) is None
    # e-mail and user name share one throttle; another IP does not help
    with pytest.raises(web.HTTPError) as e:
        await auth.authenticate(from_ip("10.9.9.9"), {"username": "alice@example.org", "password": PASSWORD})
    assert e.value.status_code == 429
    assert e.value.log_message == "Too many failed sign-ins. Try again in 2 seconds."
    assert e.value.headers == {"Retry-After": "2"}
    # other accounts are not affected
    auth.accounts.create("bob", "bob@example.org", PASSWORD)
    assert await auth.authenticate(from_ip(), {"username": "bob", "password": PASSWORD}) == {"name": "bob"}


async def test_many_failures_from_one_ip_slow_down_that_ip(auth):
    auth.ip_throttle.free_attempts = 3
    for name in ["x1", "x2", "x3"]:
        assert await auth.authenticate(from_ip("10.6.6.6"), {"username": name, "password": "guess 12345"}) is None
    with pytest.raises(web.HTTPError) as e:
        await auth.authenticate(from_ip("10.6.6.6"), {"username": "alice", "password": PASSWORD})
    assert e.value.status_code == 429
    assert await auth.authenticate(from_ip("10.7.7.7"), {"username": "alice", "password": PASSWORD})


def test_deleting_the_hub_user_deletes_the_account(auth):
    auth.delete_user(SimpleNamespace(name="alice"))
    assert auth.accounts.get("alice") is None


def test_routes_of_the_account_pages(auth):
    routes = {route for route, *_ in auth.get_handlers(app=None)}
    assert routes == {"/login", "/signup", "/change-password", "/accounts"}
