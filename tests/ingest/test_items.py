"""printable_name: a file name shown to people still tells its bytes apart."""

from __future__ import annotations

import os

from gateway.ingest.items import printable_name


def test_a_real_backslash_is_doubled_so_it_cannot_pass_for_an_escaped_byte() -> None:
    literal = "M\\xfcller.bmp"  # a name typed with a backslash, x, f, c (a Samba share allows it)
    latin1 = os.fsdecode(b"M\xfcller.bmp")  # the byte 0xfc, not UTF-8
    assert printable_name(latin1) == "M\\xfcller.bmp"
    assert printable_name(literal) == "M\\\\xfcller.bmp"
    assert printable_name(literal) != printable_name(latin1)


def test_printable_text_stays_and_controls_are_escaped() -> None:
    assert printable_name("Müller 山田/scan 1.png") == "Müller 山田/scan 1.png"
    assert printable_name("a\nb\u200bc\\d") == "a\\x0ab\\u200bc\\\\d"
