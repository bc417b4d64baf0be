"""PII masking: e-mail and IP addresses go, look-alikes (versions, times, code) stay."""

from __future__ import annotations

import gzip
import json

import pytest

from pipelines.pii import EMAIL_REPLACEMENTS, IP_REPLACEMENTS, mask_pii
from repo_paths import CORPORA, DOLMA_CRAWL

DOLMA = CORPORA / DOLMA_CRAWL


def test_emails_masked() -> None:
    text = ("Questions? Write to iwona.jelen@uwm.edu.pl or NCEPU_MMH@outlook.com, "
            "and cc j.o'brien+lists@mail.example.co.uk.")
    masked, counts = mask_pii(text)
    assert counts["email"] == 3
    for address in ("iwona.jelen@uwm.edu.pl", "NCEPU_MMH@outlook.com", "mail.example.co.uk"):
        assert address not in masked
    assert masked.startswith("Questions? Write to email@example.com or firstname.lastname@example.org, ")
    assert masked.endswith(".")  # the sentence's period is not part of the address


def test_public_ipv4_masked_private_kept() -> None:
    text = ("Failed login from 203.0.113.7? No: 81.2.69.142 port 22; "
            "router 192.168.1.1, VPN 10.8.0.1, localhost 127.0.0.1, DNS 8.8.8.8:53.")
    masked, counts = mask_pii(text)
    assert counts["ipv4"] == 2  # 203.0.113.7 is a documentation range: not global
    assert "81.2.69.142" not in masked and "8.8.8.8" not in masked
    for kept in ("203.0.113.7", "192.168.1.1", "10.8.0.1", "127.0.0.1", "port 22", ":53."):
        assert kept in masked
    assert IP_REPLACEMENTS[0] in masked


def test_ipv6_masked() -> None:
    text = "Reach us at 2606:4700:4700::1111 or 2a00:1450:4001:081c:0000:0000:0000:200e; link-local fe80::1 stays."
    masked, counts = mask_pii(text)
    assert counts["ipv6"] == 2
    assert "2606:4700" not in masked and "2a00:1450" not in masked and "fe80::1" in masked


@pytest.mark.parametrize(
    "text",
    [
        "Requires Python 3.11.2 or newer (tested on 3.12.0).",
        "Firmware v1.2.3.4 and build 10.0.19045.3693 of Windows; OID 1.3.6.1.4.1.311.",
        "Posted 27 June 2019 : 11:20:32 by hvrooy; meeting at 10:30.",
        "integer,intent(in)::a,b and std::vector<int> x; a::b::c",
        "MAC 00:1A:2B:3C:4D:5E and ratio 16:9:4.",
        "user@localhost is not routable and @handle is not an address.",
        "Section 1.2.3 says 999.1.1.1 is not an IP.",
    ],
)
def test_look_alikes_untouched(text: str) -> None:
    assert mask_pii(text) == (text, {"email": 0, "ipv4": 0, "ipv6": 0})


def test_switches() -> None:
    text = "mail a.b@example.org from 81.2.69.142"
    assert mask_pii(text, emails=False)[1] == {"email": 0, "ipv4": 1, "ipv6": 0}
    assert mask_pii(text, ips=False)[1] == {"email": 1, "ipv4": 0, "ipv6": 0}
    assert mask_pii(text, emails=False, ips=False) == (text, {"email": 0, "ipv4": 0, "ipv6": 0})


def test_output_depends_only_on_the_text() -> None:
    # replacements cycle within one text, not across calls: reruns give identical bytes
    text = "a@example.net b@example.net"
    first = mask_pii(text)
    mask_pii("c@example.net")
    assert mask_pii(text) == first
    assert first[0] == f"{EMAIL_REPLACEMENTS[0]} {EMAIL_REPLACEMENTS[1]}"


def test_real_web_pages() -> None:
    if not DOLMA.is_file():
        pytest.skip(f"real corpora not found at {CORPORA} (shared/corpora next to the repository)")
    with gzip.open(DOLMA, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    totals = {"email": 0, "ipv4": 0, "ipv6": 0}
    for text in texts:
        masked, counts = mask_pii(text)
        for key, n in counts.items():
            totals[key] += n
        if not any(counts.values()):
            assert masked == text
        assert "@uwm.edu.pl" not in masked
    print(f"\nmasked in {len(texts)} Common Crawl pages: {totals}")
    assert totals["email"] >= 40  # 50 address-shaped strings in this crawl slice
