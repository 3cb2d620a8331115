"""Accounts against the real hub: sign-up, sign-in, slow-down, password change, approval."""

import re
import secrets
from html import unescape

import pytest
import requests

from services.accounts import AccountStore
from tests.hubtools import login_session, xsrf_post

pytestmark = pytest.mark.integration

PASSWORD = "correct horse 1"


def new_name(prefix="acct") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def page_session(hub, path) -> requests.Session:
    """A fresh browser-like session that has loaded ``path`` (and got its _xsrf cookie)."""
    s = requests.Session()
    r = s.get(f"{hub.url}{path}", timeout=30)
    assert r.status_code == 200, r.text[:1000]
    return s


def sign_up(hub, name, email=None, password=PASSWORD, confirm=None) -> requests.Response:
    s = page_session(hub, "/hub/signup")
    form = {
        "username": name,
        "email": email or f"{name}@example.org",
        "password": password,
        "password_confirm": password if confirm is None else confirm,
    }
    return xsrf_post(s, hub, "/hub/signup", form)


def try_login(hub, login, password) -> requests.Response:
    s = page_session(hub, "/hub/login")
    return xsrf_post(s, hub, "/hub/login", {"username": login, "password": password})


def text(r) -> str:
    # the hub's pages declare UTF-8 in a meta tag, not in the Content-Type header
    return r.content.decode("utf-8")


def login_error(r) -> str:
    found = re.search(r'class="login_error">([^<]*)<', text(r))
    return unescape(found.group(1)) if found else ""


def page_error(r) -> str:
    found = re.search(r'class="alert alert-danger" role="alert">([^<]*)<', text(r))
    return unescape(found.group(1).strip()) if found else ""


def page_notice(r) -> str:
    found = re.search(r'class="alert alert-success" role="status">([^<]*)<', text(r))
    return unescape(found.group(1).strip()) if found else ""


def signed_in_as(session, hub) -> str:
    r = session.get(f"{hub.url}/hub/change-password", allow_redirects=False, timeout=30)
    assert r.status_code == 200, f"not signed in: {r.status_code} {r.headers.get('Location')}"
    return re.search(r"Signed in as ([^<]*)\.", r.text).group(1)


def admin_session(hub) -> requests.Session:
    password = (hub.data_dir / "initial-admin-password").read_text().strip()
    return login_session(hub, "admin", password)


# ---- open sign-up and sign-in ----


def test_login_page_asks_for_email_or_user_name_and_links_to_sign_up(hub):
    r = requests.get(f"{hub.url}/hub/login", timeout=30)
    assert "E-mail or user name" in r.text
    assert 'href="/hub/signup">Create an account</a>' in r.text


def test_first_admin_signs_in_with_the_initial_password(hub):
    password = (hub.data_dir / "initial-admin-password").read_text().strip()
    assert signed_in_as(login_session(hub, "admin@labdeck.local", password), hub) == "admin"


def test_sign_up_then_sign_in_with_email_and_with_user_name(hub):
    name = new_name()
    r = sign_up(hub, name.upper(), email=f"{name}@Example.org")
    assert r.status_code == 302
    assert r.headers["Location"] == f"/hub/login?signed_up=1&username={name}"
    r = requests.get(f"{hub.url}{r.headers['Location']}", timeout=30)
    assert "Your account was created. Sign in with your e-mail or user name." in r.text
    assert f'value="{name}"' in r.text
    assert signed_in_as(login_session(hub, f"{name}@example.org", PASSWORD), hub) == name
    assert signed_in_as(login_session(hub, name, PASSWORD), hub) == name
    account = AccountStore(hub.platform.db).get(name)
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash


def test_account_table_holds_an_argon2_hash_not_the_password(hub):
    name = new_name()
    assert sign_up(hub, name).status_code == 302
    with hub.platform.db.engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT * FROM accounts WHERE username = ?", (name,)
        ).mappings().one()
    assert row["password_hash"].startswith("$argon2id$")
    assert not any(PASSWORD in str(value) for value in row.values())


@pytest.mark.parametrize(
    "form, field, message",
    [
        ({"username": "-bad"}, "username", "The user name must be 1–32 characters"),
        ({"email": "not-an-address"}, "email", "Enter an e-mail address like name@example.org"),
        ({"password": "short"}, "password", "The password must be at least 8 characters long."),
        ({"password_confirm": "something else"}, "password_confirm", "The two passwords do not match."),
    ],
)
def test_sign_up_errors_re_render_the_form_with_400(hub, form, field, message):
    name = new_name()
    data = {"username": name, "email": f"{name}@example.org", "password": PASSWORD, "password_confirm": PASSWORD}
    data.update(form)
    s = page_session(hub, "/hub/signup")
    r = xsrf_post(s, hub, "/hub/signup", data)
    assert r.status_code == 400
    assert page_error(r).startswith(message)
    assert re.search(rf'id="{field}_input"[^>]*class="form-control is-invalid"', r.text)
    # entered values come back, passwords never do
    assert f'value="{data["email"]}"' in r.text
    assert PASSWORD not in r.text
    assert AccountStore(hub.platform.db).get(name) is None


def test_duplicate_user_name_is_refused(hub, make_user):
    user = make_user()
    r = sign_up(hub, user.name, email=f"other-{user.name}@example.org")
    assert r.status_code == 400
    assert page_error(r) == f"The user name '{user.name}' is already taken."


def test_raw_input_is_never_echoed_unescaped(hub):
    r = sign_up(hub, "<script>alert(1)</script>", email='"><img src=x onerror=alert(1)>@x.org')
    assert r.status_code == 400
    assert "<script>alert(1)" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


def test_wrong_password_is_403_with_a_message(hub, make_user):
    user = make_user()
    r = try_login(hub, user.name, "wrong password")
    assert r.status_code == 403
    assert login_error(r) == "Invalid username or password"
    assert f'value="{user.name}"' in r.text


def test_repeated_failures_slow_down_sign_in(hub, make_user):
    user = make_user()
    for _ in range(5):
        assert try_login(hub, user.email, "wrong password").status_code == 403
    # even the right password must wait now; the form says for how long
    r = try_login(hub, user.name, user.password)
    assert r.status_code == 429
    assert re.fullmatch(r"Too many failed sign-ins\. Try again in \d+ seconds\.", login_error(r))
    assert 'name="password"' in r.text
    # another account is not slowed down
    other = make_user()
    assert signed_in_as(login_session(hub, other.name, other.password), hub) == other.name


def test_change_password_then_sign_in_with_the_new_one(hub, make_user):
    user = make_user()
    s = login_session(hub, user.name, user.password)
    new = "a brand new secret 7"
    r = xsrf_post(s, hub, "/hub/change-password",
                  {"current_password": "wrong", "password": new, "password_confirm": new})
    assert (r.status_code, page_error(r)) == (400, "The current password is not correct.")
    r = xsrf_post(s, hub, "/hub/change-password",
                  {"current_password": user.password, "password": new, "password_confirm": new + "x"})
    assert (r.status_code, page_error(r)) == (400, "The two passwords do not match.")
    r = xsrf_post(s, hub, "/hub/change-password",
                  {"current_password": user.password, "password": new, "password_confirm": new})
    assert (r.status_code, page_notice(r)) == (200, "Your password was changed.")
    assert try_login(hub, user.name, user.password).status_code == 403
    assert signed_in_as(login_session(hub, user.email, new), hub) == user.name


def test_change_password_needs_sign_in(hub):
    r = requests.get(f"{hub.url}/hub/change-password", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].startswith("/hub/login")


def test_post_without_xsrf_is_refused(hub, make_user):
    name = new_name()
    s = page_session(hub, "/hub/signup")
    form = {"username": name, "email": f"{name}@example.org", "password": PASSWORD, "password_confirm": PASSWORD}
    r = s.post(f"{hub.url}/hub/signup", data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "_xsrf" in r.text
    assert AccountStore(hub.platform.db).get(name) is None
    user = make_user()
    s = login_session(hub, user.name, user.password)
    r = s.post(f"{hub.url}/hub/change-password", timeout=30,
               data={"current_password": user.password, "password": "x" * 12, "password_confirm": "x" * 12})
    assert r.status_code == 403
    assert signed_in_as(login_session(hub, user.name, user.password), hub) == user.name


def test_accounts_page_is_404_for_non_admins(hub, make_user):
    user = make_user()
    s = login_session(hub, user.name, user.password)
    assert s.get(f"{hub.url}/hub/accounts", timeout=30).status_code == 404
    r = xsrf_post(s, hub, "/hub/accounts", {"action": "reset", "username": "admin", "password": "taken over 1"})
    assert r.status_code == 404
    assert requests.get(f"{hub.url}/hub/accounts", allow_redirects=False, timeout=30).status_code == 302


def test_admin_lists_accounts_and_resets_a_password(hub, make_user):
    user = make_user()
    admin = admin_session(hub)
    r = admin.get(f"{hub.url}/hub/accounts", timeout=30)
    assert r.status_code == 200
    row = re.search(rf'<tr data-username="{user.name}">.*?</tr>', r.text, re.S).group(0)
    assert user.email in row and ">active<" in row
    r = xsrf_post(admin, hub, "/hub/accounts", {"action": "reset", "username": user.name, "password": "short"})
    assert (r.status_code, page_error(r)) == (400, "The password must be at least 8 characters long.")
    r = xsrf_post(admin, hub, "/hub/accounts",
                  {"action": "reset", "username": user.name, "password": "set by admin 42"})
    assert r.status_code == 200 and page_notice(r).startswith(f"Set a new password for {user.name}.")
    assert signed_in_as(login_session(hub, user.name, "set by admin 42"), hub) == user.name


def test_deleting_the_hub_user_deletes_the_account(hub):
    name = new_name("gone")
    AccountStore(hub.platform.db).create(name, f"{name}@example.org", PASSWORD)
    assert hub.api("POST", f"/users/{name}").status_code == 201
    assert hub.api("DELETE", f"/users/{name}").status_code == 204
    assert AccountStore(hub.platform.db).get(name) is None
    assert try_login(hub, name, PASSWORD).status_code == 403


# ---- approval mode (restarts the hub; keep these last in the module) ----


@pytest.fixture(scope="module")
def approval_hub(hub):
    hub.restart(extra_config="c.LabdeckAuthenticator.signup_mode = 'approval'")
    yield hub
    hub.restart()


def test_approval_mode_pending_user_waits_for_an_admin(approval_hub):
    hub = approval_hub
    name = new_name("pend")
    r = sign_up(hub, name)
    assert r.status_code == 200
    assert "An administrator must approve it before you can sign in." in r.text
    r = try_login(hub, name, PASSWORD)
    assert r.status_code == 403
    assert login_error(r) == "Your account is waiting for an administrator's approval."

    admin = admin_session(hub)
    r = admin.get(f"{hub.url}/hub/accounts", timeout=30)
    row = re.search(rf'<tr data-username="{name}">.*?</tr>', r.text, re.S).group(0)
    assert ">pending<" in row and 'value="approve"' in row and 'value="reject"' in row
    r = xsrf_post(admin, hub, "/hub/accounts", {"action": "approve", "username": name})
    assert r.status_code == 200 and page_notice(r) == f"Approved {name}: they can sign in now."
    assert signed_in_as(login_session(hub, f"{name}@example.org", PASSWORD), hub) == name


def test_approval_mode_rejected_user_cannot_sign_in(approval_hub):
    hub = approval_hub
    name = new_name("rej")
    assert sign_up(hub, name).status_code == 200
    r = xsrf_post(admin_session(hub), hub, "/hub/accounts", {"action": "reject", "username": name})
    assert r.status_code == 200
    r = try_login(hub, name, PASSWORD)
    assert r.status_code == 403
    assert login_error(r).startswith("Your account was not approved.")


def test_closed_mode_has_no_sign_up(approval_hub):
    hub = approval_hub
    hub.restart(extra_config="c.LabdeckAuthenticator.signup_mode = 'closed'")  # the fixture restores it
    assert "Create an account" not in requests.get(f"{hub.url}/hub/login", timeout=30).text
    r = requests.get(f"{hub.url}/hub/signup", timeout=30)
    assert r.status_code == 404 and "Sign-up is closed" in r.text
    s = page_session(hub, "/hub/login")
    name = new_name("closed")
    form = {"username": name, "email": f"{name}@example.org", "password": PASSWORD, "password_confirm": PASSWORD}
    assert xsrf_post(s, hub, "/hub/signup", form).status_code == 404
    assert AccountStore(hub.platform.db).get(name) is None
