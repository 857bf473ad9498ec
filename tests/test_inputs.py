"""Image strings -> bytes: pybase64 decodes them, by the standard library's strict rules."""

from __future__ import annotations

import base64
import binascii
import random

import pytest

from service.imaging import ImageError
from service.inputs import decode_data_uri

LIMIT = 1 << 20


def _stdlib(payload: str) -> bytes | None:
    """What `base64.b64decode(validate=True)` makes of the payload after the same clean-up
    (whitespace dropped, padding completed, URL-safe alphabet detected, the two alphabets not
    mixed); None: refused."""
    compact = "".join(payload.split())
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    if altchars and ("+" in compact or "/" in compact):
        return None  # both alphabets in one string: refused (the standard library warns)
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _ours(payload: str) -> bytes | None:
    try:
        return decode_data_uri(f"data:image/jpeg;base64,{payload}", LIMIT).decode()
    except ImageError as exc:
        assert exc.code == "invalid_image"
        return None


def _payloads() -> list[str]:
    rng = random.Random(0)
    out = []
    for n in [0, 1, 2, 3, 4, 5, 57, 58, 59, 1000, 60_000]:
        data = rng.randbytes(n)
        plain = base64.b64encode(data).decode()
        out += [plain, plain.rstrip("="), base64.urlsafe_b64encode(data).decode()]
        out.append("\n".join(plain[i : i + 76] for i in range(0, len(plain), 76)))  # MIME lines
    # refused by the standard library: each must be refused here too
    out += ["%%%", "ab c=", "abc=d===", "=abc", "ab==cd==", "YW=j", "Y===", "é", "YWJj\x00"]
    out += ["a+b-", "YW_j+w==", "YWJj" * 10 + "!"]
    return out


@pytest.mark.parametrize("payload", _payloads(), ids=lambda p: f"{len(p)}:{p[:12]!r}")
def test_base64_payloads_decode_as_the_standard_library_does(payload: str) -> None:
    assert _ours(payload) == _stdlib(payload)
