"""Mask e-mail and IP addresses, with datatrove's PIIFormatter patterns and replacement values.

Reused from datatrove (pipeline/formatters/pii.py): the e-mail regex, the IPv4 regex, the rule that
only public IPs are PII (`public_ip_validator`, ipaddress.is_global) and the replacement values
(example.com e-mails; IPs that did not answer pings). Differences, and why:
- replacements cycle per call, not per formatter instance, so a text's output does not depend on
  which texts the same worker saw before (byte-identical reruns);
- the IPv4 match is bounded: no digit, letter or dot may touch it, so "1.2.3.4.5" (a version or an
  OID) is left alone where datatrove would mask its first four parts;
- IPv6 (not in datatrove): hex groups with ":" validated by the ipaddress module, global only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

from datatrove.pipeline.formatters.pii import PIIFormatter, public_ip_validator

_DATATROVE = PIIFormatter()
EMAIL_RE: re.Pattern = _DATATROVE.emails_replacer.regex
EMAIL_REPLACEMENTS: tuple[str, ...] = _DATATROVE.emails_replacer.replacements
IP_REPLACEMENTS: tuple[str, ...] = _DATATROVE.ip_replacer.replacements
IPV6_REPLACEMENTS: tuple[str, ...] = ("2001:db8::1", "2001:db8::2")  # RFC 3849 documentation range

IPV4_RE = re.compile(r"(?<![\w.])" + _DATATROVE.ip_replacer.regex.pattern + r"(?![\w]|\.\d)")
# candidates only (2 to 8 ":"-separated hex groups, empty groups allowed); ipaddress decides
IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:]|\.\w)")


def _is_public_ipv6(candidate: str) -> bool:
    # at least 3 non-empty groups: "a::b" or "dead::beef" are more often code than addresses
    if sum(1 for group in candidate.split(":") if group) < 3:
        return False
    try:
        return ipaddress.IPv6Address(candidate).is_global
    except ValueError:
        return False


def _masker(pattern: re.Pattern, replacements: tuple[str, ...], valid: Callable[[str], bool] | None):
    def mask(text: str) -> tuple[str, int]:
        count = 0

        def replace(match: re.Match) -> str:
            nonlocal count
            if valid is not None and not valid(match.group(0)):
                return match.group(0)
            count += 1
            return replacements[(count - 1) % len(replacements)]

        return pattern.sub(replace, text), count

    return mask


_mask_emails = _masker(EMAIL_RE, EMAIL_REPLACEMENTS, None)
_mask_ipv4 = _masker(IPV4_RE, IP_REPLACEMENTS, public_ip_validator)
_mask_ipv6 = _masker(IPV6_RE, IPV6_REPLACEMENTS, _is_public_ipv6)


def mask_pii(text: str, emails: bool = True, ips: bool = True) -> tuple[str, dict[str, int]]:
    """Replace e-mail addresses and public IPv4/IPv6 addresses; returns (text, counts).

    counts: {"email": n, "ipv4": n, "ipv6": n} (masked occurrences; disabled kinds count 0).
    Private, loopback and reserved IPs (10.0.0.1, 127.0.0.1, 192.168.x.x, fe80::1) are kept.
    """
    counts = {"email": 0, "ipv4": 0, "ipv6": 0}
    if emails and "@" in text:
        text, counts["email"] = _mask_emails(text)
    if ips:
        if "." in text:
            text, counts["ipv4"] = _mask_ipv4(text)
        if "::" in text or text.count(":") >= 7:
            text, counts["ipv6"] = _mask_ipv6(text)
    return text, counts
