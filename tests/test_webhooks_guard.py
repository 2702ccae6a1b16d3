"""The SSRF guard's decision, without any network: literal forms, injected
resolvers (real DNS is never asked), allowlists. Nothing here sends a packet."""

from __future__ import annotations

import ipaddress

import pytest

from erpq.webhooks import guard
from erpq.webhooks.guard import Allowlist, Refused, Unresolvable, check

TEST_ALLOW = ["127.0.0.1", "::1"]


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"the guard must not resolve {host!r} here")


def fake_dns(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


LOOPBACK_FORMS = [
    ("http://2130706433/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://0x7f000001/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://0x7F.0.0.1/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://127.1/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://127.0.1/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://0177.0.0.1/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://017700000001/", "non-canonical IPv4 form of 127.0.0.1"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped 127.0.0.1, which is loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped 127.0.0.1, which is loopback"),
    ("http://0/", "non-canonical IPv4 form of 0.0.0.0"),
]

INTERNAL = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped 169.254.169.254, which is link-local"),
    ("http://2852039166/", "non-canonical IPv4 form of 169.254.169.254"),
    ("http://0xa9fea9fe/", "non-canonical IPv4 form of 169.254.169.254"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254:8080/", "carrier-grade NAT"),
    ("http://10.0.0.1/", "private"),
    ("http://10.1/", "non-canonical IPv4 form of 10.0.0.1"),
    ("http://192.168.1.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 of 169.254.169.254"),
    ("http://[2002:a00:1::]/", "6to4 of 10.0.0.1"),
    ("http://[::ffff:10.0.0.1]/", "IPv4-mapped 10.0.0.1, which is private"),
    ("http://[::ffff:100.64.0.1]/", "IPv4-mapped 100.64.0.1, which is carrier-grade NAT"),
]


@pytest.mark.parametrize("url,why", LOOPBACK_FORMS + INTERNAL)
@pytest.mark.parametrize("allow", [[], TEST_ALLOW], ids=["no-allowlist", "test-allowlist"])
def test_internal_destinations_are_refused_with_the_reason(url, why, allow):
    with pytest.raises(Refused) as info:
        check(url, allow, resolve=no_dns)
    assert why in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://127.0.0.1:8080/x", "http://[::1]:9/"])
def test_loopback_is_refused_unless_allowlisted(url):
    with pytest.raises(Refused, match="loopback"):
        check(url, [], resolve=no_dns)
    target = check(url, TEST_ALLOW, resolve=no_dns)
    assert [str(a) for a in target.addresses] in (["127.0.0.1"], ["::1"])


@pytest.mark.parametrize("url,why", [
    ("ftp://example.com/", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://127.0.0.1/", "scheme 'gopher'"),
    ("example.com/hook", "scheme"),
    ("http:///path", "no host"),
    ("http://exa mple.com/", "not a URL"),
    ("http://1.2.3.4.5/", "neither a host name nor a valid IPv4 address"),
    ("http://256.1.1.1/", "neither a host name nor a valid IPv4 address"),
    ("http://09.1.1.1/", "neither a host name nor a valid IPv4 address"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://bad_host!/", "not a valid host name"),
    ("http://127.0.0.1:99999/", "not a URL"),
])
def test_malformed_urls_are_refused(url, why):
    with pytest.raises(Refused) as info:
        check(url, TEST_ALLOW, resolve=no_dns)
    assert why in str(info.value)


def test_public_literal_is_allowed_without_resolving():
    target = check("https://93.184.216.34/hook", [], resolve=no_dns)
    assert target.addresses == (ipaddress.ip_address("93.184.216.34"),)
    assert (target.scheme, target.port, target.host_header) == ("https", 443, "93.184.216.34")


def test_host_names_are_resolved_once_and_every_address_checked():
    dns = fake_dns({"hooks.example.test": ["93.184.216.34", "2606:2800:220:1::1"],
                    "mixed.example.test": ["93.184.216.34", "10.0.0.5"],
                    "meta.example.test": ["169.254.169.254"],
                    "mapped.example.test": ["::ffff:127.0.0.1"]})
    target = check("http://hooks.example.test:8080/x", [], resolve=dns)
    assert [str(a) for a in target.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]
    assert target.host_header == "hooks.example.test:8080"
    assert dns.calls == ["hooks.example.test"]
    with pytest.raises(Refused, match="resolves to 10.0.0.5, which is private"):
        check("http://mixed.example.test/", [], resolve=dns)
    with pytest.raises(Refused, match="link-local"):
        check("http://meta.example.test/", TEST_ALLOW, resolve=dns)
    with pytest.raises(Refused, match="IPv4-mapped 127.0.0.1"):
        check("http://mapped.example.test/", [], resolve=dns)


def test_resolution_failure_is_unresolvable_not_a_policy_refusal():
    with pytest.raises(Unresolvable, match="cannot resolve host 'nowhere.test'"):
        check("http://nowhere.test/", [], resolve=fake_dns({}))


def test_localhost_passes_only_through_the_allowlist():
    dns = fake_dns({"localhost": ["::1", "127.0.0.1"]})
    assert len(check("http://localhost:8000/", TEST_ALLOW, resolve=dns).addresses) == 2
    with pytest.raises(Refused, match="loopback"):
        check("http://localhost:8000/", ["127.0.0.1"], resolve=dns)  # ::1 is not allowed


def test_allowlist_takes_networks_and_host_names():
    allow = Allowlist.parse(["10.20.0.0/16", "crm.internal"])
    dns = fake_dns({"crm.internal": ["10.99.0.1"], "other.internal": ["10.99.0.1"]})
    assert check("http://10.20.3.4/", allow, resolve=no_dns).addresses
    with pytest.raises(Refused):
        check("http://10.21.0.1/", allow, resolve=no_dns)
    assert check("http://crm.internal/", allow, resolve=dns).addresses
    with pytest.raises(Refused):
        check("http://other.internal/", allow, resolve=dns)


def test_without_a_resolver_only_syntax_and_literals_are_checked():
    target = check("https://hooks.example.test/x", [], resolve=None)
    assert target.addresses == ()
    with pytest.raises(Refused):
        check("http://169.254.169.254/", [], resolve=None)


def test_ipv6_host_header_keeps_brackets_and_port():
    target = check("http://[::1]:8080/x", TEST_ALLOW, resolve=no_dns)
    assert target.host_header == "[::1]:8080"
    assert check("https://[2606:2800:220:1::1]/", [], resolve=no_dns).host_header == "[2606:2800:220:1::1]"


@pytest.mark.parametrize("address,problem", [
    ("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.2", "loopback"),
    ("198.18.0.1", "private"), ("192.0.2.1", "private"), ("240.0.0.1", ""),
])
def test_address_problem(address, problem):
    found = guard.address_problem(ipaddress.ip_address(address))
    assert (found is None) if problem is None else (problem in found)
