"""Count the scans of a JPEG from its markers, without decoding it.

A progressive JPEG is decoded scan by scan and every scan is a pass over the image's coefficient
blocks, so decode time grows with scans x pixels while the file stays tiny: 2,000 repeated scans
of an all-EOB band made a 282 KB image decode for 80 s. Real encoders write few scans (libjpeg's
progressive default: 10 for colour, 6 for grey; mozjpeg and jpegtran scripts stay in the tens),
so the scans are counted first and a crafted file is refused before any pixel is decoded.
"""

from __future__ import annotations

import re

_SOS = 0xDA
_EOI = 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
# Inside entropy-coded data 0xFF is followed by a stuffed 0x00 or a restart marker; anything
# else (fill bytes aside) starts the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def count_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan markers of the first image in `data` (a JPEG starting with SOI), counting
    no further than `stop_after` + 1. Damaged structure ends the count; the decoder reports it."""
    scans = 0
    pos, end = 2, len(data)
    while pos < end and scans <= stop_after:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            break
        while pos < end and data[pos] == 0xFF:  # a marker may be preceded by fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            break
        if marker == 0x00 or marker in _STANDALONE or pos + 2 > end:
            continue  # 0x00: a stray stuffed byte outside a scan, not a marker
        pos += int.from_bytes(data[pos : pos + 2], "big")  # the length counts its own 2 bytes
        if marker == _SOS:
            scans += 1
            match = _NEXT_MARKER.search(data, pos)
            if match is None:
                break
            pos = match.start()
    return scans
