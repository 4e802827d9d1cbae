"""ACME DNS-01 through RFC 2136 dynamic updates, against real peers on loopback.

Knot DNS (Debian's ``knot``: knotd, run as the current user with its files in tmp_path) serves
the zone ``rtc.test.`` on 127.0.0.1:<free port> and lets the TSIG key ``rtcbox-key.``
(hmac-sha256) update it. pebble resolves every name through that knotd (``-dnsserver``), so it
validates DNS-01 by asking knot for ``_acme-challenge.rtc.test`` TXT, as Let's Encrypt asks a
zone's name servers. rtcbox is pointed at pebble (RTCBOX_ACME_DIRECTORY): no test reaches
Let's Encrypt or any other DNS.

- Issuance: rtcbox (RTCBOX_ACME_CHALLENGE=dns-01, provider rfc2136, zone found from knot's SOA)
  adds the TXT record with a signed UPDATE, pebble validates it, the certificate is stored and
  served by TURN over TLS, verified against pebble's root; afterwards knot has no TXT record
  at ``_acme-challenge.rtc.test`` (knot's log shows two applied updates: the add and the
  delete; the zone's ACL lets only the key update it), and
  the TSIG secret is not in rtcbox's log.
- Wrong secret: knot refuses the update (NOTAUTH, TSIG error BADSIG); the log and the dashboard
  say the server does not accept the key because the secret does not match, the self-signed
  certificate stays and a retry is scheduled; nothing was added to the zone.
- Manual: rtcbox shows the record to create (log and dashboard) and waits; once the test, acting
  as the admin, adds it to knot, rtcbox sees it on RTCBOX_ACME_DNS_SERVER and the certificate is
  issued.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import free_port, free_udp_tcp_port, stop_processes, wait_until
from test_acme import (  # noqa: F401 - start_pebble is a fixture used by name
    DOMAIN, acme_env, dashboard_text, start_pebble, stored_certificate)
from test_admin_synapse import Panel

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
KEY_NAME = "rtcbox-key."
SECRET = base64.b64encode(bytes(range(32))).decode()
WRONG_SECRET = base64.b64encode(bytes(range(1, 33))).decode()
RECORD = f"_acme-challenge.{DOMAIN}."


@pytest.fixture(scope="module", autouse=True)
def knot_tools():
    """knotd comes from Debian's knot package; pebble from Debian's pebble."""
    missing = [p for p in (KNOTD, shutil.which("pebble") or "/usr/bin/pebble")
               if not os.access(p, os.X_OK)]
    if missing:
        message = f"missing {', '.join(missing)}: apt-get install knot pebble"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Knot:
    def __init__(self, port: int, log: Path):
        self.port = port
        self.server = f"127.0.0.1:{port}"
        self.log = log

    def txt(self, name: str = RECORD) -> list[str]:
        """The TXT values knot serves at ``name`` (asked over TCP, no recursion)."""
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        query.flags &= ~dns.flags.RD
        answer = dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=5)
        assert answer.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), answer
        return [b"".join(rdata.strings).decode()
                for rrset in answer.answer for rdata in rrset]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def knot(tmp_path):
    """knotd serving rtc.test. (A 127.0.0.1, so pebble could reach rtc.test too) on a free
    loopback port, updatable with the TSIG key rtcbox-key."""
    home = tmp_path / "knot"
    (home / "zones").mkdir(parents=True)
    (home / "db").mkdir()
    # knotd's control socket needs a short path (unix sockets: about 100 bytes).
    rundir = tempfile.mkdtemp(prefix="knot-", dir="/tmp")
    port = free_udp_tcp_port()
    (home / "zones" / "rtc.test.zone").write_text(
        "$ORIGIN rtc.test.\n$TTL 60\n"
        "@ SOA ns.rtc.test. admin.rtc.test. 1 3600 600 86400 60\n"
        "@ NS ns.rtc.test.\nns A 127.0.0.1\n@ A 127.0.0.1\n")
    config = home / "knot.conf"
    config.write_text(f"""server:
    rundir: "{rundir}"
    listen: 127.0.0.1@{port}
database:
    storage: "{home / 'db'}"
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {SECRET}
acl:
  - id: rtcbox_update
    key: {KEY_NAME}
    action: update
template:
  - id: default
    storage: "{home / 'zones'}"
    file: "%s.zone"
zone:
  - domain: rtc.test.
    acl: rtcbox_update
log:
  - target: stderr
    any: info
""")
    log = home / "knotd.log"
    process = subprocess.Popen([KNOTD, "-c", str(config)], stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT)
    server = Knot(port, log)

    def answers():
        query = dns.message.make_query(DOMAIN, dns.rdatatype.SOA)
        return dns.query.tcp(query, "127.0.0.1", port=port, timeout=2).answer

    try:
        wait_until(lambda: process.poll() is None and answers(), 20, "knotd")
    except TimeoutError:
        raise RuntimeError(f"knotd did not start:\n{log.read_text(errors='replace')[-3000:]}")
    yield server
    stop_processes([process])
    shutil.rmtree(rundir, ignore_errors=True)


def dns_env(pebble, pki, knot: Knot, secret: str, **extra) -> dict:
    env = acme_env(pebble, pki, free_port())
    env.update({"RTCBOX_ACME_CHALLENGE": "dns-01", "RTCBOX_ACME_DNS_PROVIDER": "rfc2136",
                "RTCBOX_ACME_DNS_SERVER": knot.server, "RTCBOX_ACME_DNS_TSIG_KEY": KEY_NAME,
                "RTCBOX_ACME_DNS_TSIG_SECRET": secret})
    env.update(extra)
    return env


def test_dns01_through_rfc2136_issues_a_certificate_and_removes_the_record(
        knot, start_pebble, start_rtcbox, pki, tmp_path):
    # HTTP-01 would be validated on a closed port: only DNS-01 can succeed here.
    pebble = start_pebble(free_port(), dns_server=knot.server)
    box = start_rtcbox(dns_env(pebble, pki, knot, SECRET))

    wait_until(lambda: stored_certificate(box)[0] == "acme", 90,
               f"an ACME certificate (log:\n{box.log_text()[-3000:]}\nknot:\n"
               f"{knot.log_text()[-2000:]})")
    log = box.log_text()
    assert "ACME: installed a new certificate" in log
    assert 'challenge="dns-01"' in log
    assert "ACME: the TXT record is visible" in log

    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem(pki["ca"]))
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", box.turn_tls_port), timeout=10) as tcp:
        with context.wrap_socket(tcp, server_hostname=DOMAIN) as tls:
            served = tls.getpeercert()
    assert [v for k, v in served["subjectAltName"] if k == "DNS"] == [DOMAIN]

    # Two updates went through knot (only the key may update: its ACL), the add and the
    # delete, and the record is gone now.
    wait_until(lambda: knot.txt() == [], 10, "the TXT record's deletion")
    applied = [line for line in knot.log_text().splitlines() if "DDNS, finished" in line]
    assert len(applied) == 2, knot.log_text()[-3000:]
    assert SECRET not in log

    text = dashboard_text(box)
    assert "from the ACME CA" in text and "certificate valid" in text, text[-3000:]
    assert "DNS record published" not in text


def test_a_wrong_tsig_secret_is_explained_and_the_old_certificate_kept(
        knot, start_pebble, start_rtcbox, pki):
    pebble = start_pebble(free_port(), dns_server=knot.server)
    box = start_rtcbox(dns_env(pebble, pki, knot, WRONG_SECRET, RTCBOX_ACME_DNS_ZONE="rtc.test"))

    advice = (f"rtcbox could not publish the DNS record _acme-challenge.{DOMAIN} TXT: "
              f"{knot.server} does not accept the TSIG key {KEY_NAME}: the secret does not "
              f"match (BADSIG)")
    wait_until(lambda: advice in box.log_text(), 60,
               f"the explained failure (log:\n{box.log_text()[-3000:]})")
    log = box.log_text()
    assert "RTCBOX_ACME_DNS_TSIG_SECRET" in log
    assert "retrying in 60 s" in log
    assert WRONG_SECRET not in log and SECRET not in log
    assert stored_certificate(box)[0] == "self-signed"
    assert knot.txt() == []

    text = dashboard_text(box)
    assert "self-signed" in text and "failed, retry scheduled" in text, text[-3000:]
    assert advice in text


def test_a_manual_record_is_shown_and_the_certificate_follows_once_it_exists(
        knot, start_pebble, start_rtcbox, pki):
    """Provider ``manual``: rtcbox shows the TXT record to create (dashboard and log) and waits;
    the test then creates it in knot the way an admin would at their DNS provider (a signed
    update from outside rtcbox), rtcbox sees it on the server named by RTCBOX_ACME_DNS_SERVER,
    tells the CA, and the certificate is issued. rtcbox itself never updates the zone."""
    import dns.tsigkeyring
    import dns.update

    pebble = start_pebble(free_port(), dns_server=knot.server)
    env = acme_env(pebble, pki, free_port())
    env.update({"RTCBOX_ACME_CHALLENGE": "dns-01", "RTCBOX_ACME_DNS_PROVIDER": "manual",
                "RTCBOX_ACME_DNS_SERVER": knot.server})
    box = start_rtcbox(env)

    shown = {}
    panel = Panel(box)
    panel.set_up()

    def record_shown() -> bool:
        marker = f"create the DNS record {RECORD[:-1]} TXT \""
        for line in box.log_text().splitlines():
            if marker in line:
                value = line.split(marker, 1)[1].split('"', 1)[0]
                page = html.unescape(re.sub(r"<[^>]+>", " ", panel.get("/").text))
                if value and value in page and RECORD[:-1] in page:
                    shown["value"] = value
                    return True
        return False

    wait_until(record_shown, 60, f"the record to create (log:\n{box.log_text()[-3000:]})")
    assert stored_certificate(box)[0] == "self-signed"
    assert knot.txt() == []  # rtcbox did not touch the zone

    # The admin creates the record.
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    update = dns.update.UpdateMessage("rtc.test.", keyring=keyring, keyname=KEY_NAME,
                                      keyalgorithm="hmac-sha256")
    update.add(RECORD, 60, "TXT", f'"{shown["value"]}"')
    answer = dns.query.tcp(update, "127.0.0.1", port=knot.port, timeout=5)
    assert answer.rcode() == dns.rcode.NOERROR, answer

    wait_until(lambda: stored_certificate(box)[0] == "acme", 90,
               f"an ACME certificate (log:\n{box.log_text()[-3000:]})")
    assert "ACME: the TXT record is visible" in box.log_text()
    assert "may be deleted now" in box.log_text()
