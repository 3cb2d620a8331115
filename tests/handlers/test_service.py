"""The labdeck service: hub login, the site's one navigation, JSON errors, XSRF."""

import pytest
import requests

from tests.hubtools import SERVICE, ServiceClient, login_session, page_text, xsrf_post

pytestmark = pytest.mark.integration


def test_pages_use_the_hub_login_and_the_sites_navigation(hub, make_user):
    amy = make_user()
    anonymous = requests.get(f"{hub.url}{SERVICE}debug", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and "/hub/api/oauth2/authorize" in anonymous.headers["Location"]

    s = login_session(hub, amy.email, amy.password)
    r = s.get(f"{hub.url}{SERVICE}debug", timeout=30)  # OAuth with the hub, no consent screen
    assert r.status_code == 200 and r.url.endswith(f"{SERVICE}debug")
    html = page_text(r)
    for module in ("Online experiment", "Private repository", "Remote debug", "Training / evaluation",
                   "High-speed cache", "Personal centre"):
        assert module in html, module
    assert 'class="nav-link active"' in html and ">Remote debug<" in html
    # the hub's own pages carry the same navigation, linking to the service
    home = page_text(s.get(f"{hub.url}/hub/home", timeout=30))
    assert f'href="{SERVICE}debug"' in home and "Private repository" in home


def test_api_wants_a_token_or_session_and_answers_json(hub, make_user):
    bea = make_user()
    r = requests.get(f"{hub.url}{SERVICE}api/debug", timeout=30)
    assert r.status_code == 403 and r.json()["status"] == 403
    api = ServiceClient(hub, bea.name)
    r = api("GET", "/debug")
    assert r.status_code == 200 and r.json() == {"sessions": []}
    r = api("POST", "/debug", data="not json")
    assert r.status_code == 400 and r.json()["message"] == "The request body is not valid JSON"
    assert api("GET", "/debug/dbg-00000000").status_code == 404


def test_state_changing_forms_need_the_xsrf_token(hub, make_user):
    cid = make_user()
    s = login_session(hub, cid.name, cid.password)
    s.get(f"{hub.url}{SERVICE}debug", timeout=30)
    r = s.post(f"{hub.url}{SERVICE}debug/delete", data={"ids": "dbg-00000000"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    r = xsrf_post(s, hub, f"{SERVICE}debug/delete", {"ids": "dbg-00000000"})
    assert r.status_code == 400 and "no such session" in page_text(r)
