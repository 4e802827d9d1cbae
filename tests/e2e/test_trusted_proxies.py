"""X-Forwarded-For and X-Forwarded-Proto are believed only from RTCBOX_TRUSTED_PROXIES.

The real binary on loopback, reached from distinct loopback source addresses: 127.0.0.2 plays
the trusted reverse proxy, 127.0.0.3 a client (on the LAN, say) that invents a new
X-Forwarded-For for every password guess, 127.0.0.4 an honest browser. The guesser must stay
inside the admin login rate limit and the token endpoints' limit; the proxy's clients are told
apart (and each one limited); Secure cookies follow a trusted proxy's X-Forwarded-Proto only.
"""

import http.client
import secrets
import urllib.parse

from lk_helpers import sfu_env
from test_admin_synapse import PASSWORD, Panel

PROXY, GUESSER, BROWSER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
# The admin login limit lets a client try 5 passwords at once, then one every 12 s.
LOGIN_BURST = 5


def request(base_url: str, method: str, path: str, source: str, headers: dict,
            body: str | None = None) -> tuple[int, http.client.HTTPMessage, str]:
    """One request on a fresh connection from the loopback address ``source``."""
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30,
                                            source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode(errors="replace")
    finally:
        connection.close()


def login(box, source: str, password: str, headers: dict | None = None):
    """A login form post as a browser sends it (double-submit CSRF cookie and field)."""
    csrf = secrets.token_hex(16)
    body = urllib.parse.urlencode({"csrf": csrf, "password": password})
    return request(box.admin_url, "POST", "/login", source,
                   {"Content-Type": "application/x-www-form-urlencoded",
                    "Cookie": f"rtcbox_csrf={csrf}", **(headers or {})}, body)


def guesses(box, source: str, count: int, forwarded_for) -> list[int]:
    """``count`` wrong passwords from ``source``; ``forwarded_for(i)`` is the i-th header."""
    return [login(box, source, f"guess-{i}", {"X-Forwarded-For": forwarded_for(i)})[0]
            for i in range(count)]


def test_forwarded_headers_are_believed_only_from_trusted_proxies(start_rtcbox):
    box = start_rtcbox(dict(sfu_env(), RTCBOX_TRUSTED_PROXIES=PROXY))
    Panel(box).set_up()

    # A client that is not a trusted proxy: every guess counts against its own address,
    # whatever X-Forwarded-For it invents.
    rotating = guesses(box, GUESSER, LOGIN_BURST + 3, lambda i: f"10.1.2.{i}")
    assert rotating[:LOGIN_BURST] == [401] * LOGIN_BURST, rotating
    assert set(rotating[LOGIN_BURST:]) == {429}, rotating

    # The trusted proxy forwards many clients: each is counted separately...
    forwarded = guesses(box, PROXY, 3 * LOGIN_BURST, lambda i: f"198.51.100.{i}")
    assert forwarded == [401] * (3 * LOGIN_BURST), forwarded
    # ...and one of them guessing through it is limited like anyone else.
    one = guesses(box, PROXY, LOGIN_BURST + 2, lambda i: "203.0.113.9")
    assert one[:LOGIN_BURST] == [401] * LOGIN_BURST and set(one[LOGIN_BURST:]) == {429}, one

    # Honest users still get in, directly and through the proxy. Only the proxy's
    # X-Forwarded-Proto makes the session cookie Secure.
    status, headers, _ = login(box, BROWSER, PASSWORD, {"X-Forwarded-Proto": "https"})
    cookie = headers.get("Set-Cookie", "")
    assert status == 303 and "rtcbox_session=" in cookie, (status, cookie)
    assert "Secure" not in cookie, cookie
    status, headers, _ = login(box, PROXY, PASSWORD,
                               {"X-Forwarded-For": "198.51.100.200", "X-Forwarded-Proto": "https"})
    cookie = headers.get("Set-Cookie", "")
    assert status == 303 and "rtcbox_session=" in cookie and "; Secure" in cookie, (status, cookie)

    # The token endpoints' limit (a burst of 30) holds the same way.
    def token_requests(source: str, count: int, forwarded_for) -> list[int]:
        return [request(box.url, "POST", "/sfu/get", source,
                        {"Content-Type": "application/json",
                         "X-Forwarded-For": forwarded_for(i)}, "{}")[0]
                for i in range(count)]

    rotating = token_requests(GUESSER, 40, lambda i: f"10.9.8.{i}")
    assert 429 in rotating, rotating
    forwarded = token_requests(PROXY, 40, lambda i: f"192.0.2.{i}")
    assert forwarded == [400] * 40, forwarded
    assert request(box.url, "GET", "/healthz", GUESSER, {})[0] == 200
