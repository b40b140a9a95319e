"""MIME assembly: what it writes is what Python's email package (and so a mail client) reads back."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.header import decode_header, make_header
from typing import Any

import pytest

from include.backorder import mime


def unfolded(line: str) -> str:
    return line.replace("\r\n ", " ")


@pytest.mark.parametrize(
    "value",
    [
        "Your order 4711: some items will arrive later",
        "Ihre Bestellung 4711: einige Artikel kommen später",
        "🏕️ " * 40,
        "ä" * 200,
        "Zelt „Berg & Tal“ für 2 Personen – 😀 " * 5,
    ],
)
def test_encoded_words_decode_to_the_text_and_lines_stay_short(value: str) -> None:
    line = mime.header("Subject", value)
    assert mime.HeaderLine(str(line)) == line  # what the builder makes passes the line check it skips
    assert line.isascii()
    assert max(len(part) for part in line.split("\r\n")) <= 78
    assert str(make_header(decode_header(unfolded(line).removeprefix("Subject: ")))) == value


def test_ascii_values_fold_at_spaces_and_unfold_to_the_same() -> None:
    value = (
        "<mailto:optout@shop.example?subject=unsubscribe%20abc>, <https://shop.example/optout?token=" + "x" * 90 + ">"
    )
    line = mime.header("List-Unsubscribe", value)
    assert (
        line == f"List-Unsubscribe: <mailto:optout@shop.example?subject=unsubscribe%20abc>,\r\n {value.split(' ')[1]}"
    )
    assert unfolded(line) == f"List-Unsubscribe: {value}"


@pytest.mark.parametrize(
    "name", ["", "Ann Example", "Example, Ann", 'Ann "the boss" Example', "Jürgen Müller", "O'Brien; Ann (private)"]
)
def test_addresses_read_back_as_written(name: str) -> None:
    line = mime.address_header("To", name, "ann@example.com")
    assert mime.HeaderLine(str(line)) == line
    text = "\r\n".join([line, "Subject: x", "", "body", ""])
    msg: Any = message_from_bytes(text.encode("ascii"), policy=policy.default)
    (address,) = msg["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ann@example.com")


def test_an_assembled_message_has_the_shape_mail_clients_expect() -> None:
    headers = [mime.header("From", "s@example.com"), mime.address_header("To", "", "ann@example.com")]
    data = mime.assemble([*headers, mime.header("Subject", "x")], "Hallo\nWelt ä", "<p>ä</p>", "de")
    msg: Any = message_from_bytes(data, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative" and msg["Content-Language"] == "de"
    text, html = msg.iter_parts()
    assert text.get_content() == "Hallo\r\nWelt ä" and html.get_content() == "<p>ä</p>"
    assert not msg.defects and data.isascii() and b"\r\n\r\n" in data
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))


# Finding 1 of issue 14: every way a CR, LF, NUL or other control could reach the header block.
UNSAFE = [
    "\r\nBcc: victim@evil.example",
    "\nBcc: x@evil.example",
    "\r",
    "\x00",
    "\t",
    "\x7f",
    "\x85",
    "\u2028",
    "\r\n\r\ninjected body",
]


@pytest.mark.parametrize("bad", UNSAFE)
def test_the_header_builder_refuses_a_control_character_anywhere(bad: str) -> None:
    with pytest.raises(mime.HeaderError, match="header List-Unsubscribe: the value holds a control character"):
        mime.header("List-Unsubscribe", f"<mailto:optout@shop.example{bad}?subject=unsubscribe>")
    with pytest.raises(mime.HeaderError, match="header Subject"):
        mime.header("Subject", f"Ihre Bestellung ä{bad}")  # the non-ASCII path too
    with pytest.raises(mime.HeaderError, match="header To: the display name"):
        mime.address_header("To", f"Ann{bad}", "ann@example.com")
    with pytest.raises(mime.HeaderError, match="header From: the address"):
        mime.address_header("From", "Shop", f"shop@example.com{bad}")
    with pytest.raises(mime.HeaderError):
        mime.header(f"X-Name{bad}", "x")


@pytest.mark.parametrize("addr", ["a b@example.com", "<a@example.com>", "a@example.com, b@example.com", "nobody"])
def test_an_address_header_takes_one_plain_address(addr: str) -> None:
    with pytest.raises(mime.HeaderError, match="is not one plain email address"):
        mime.address_header("To", "Ann", addr)


def test_a_raw_header_line_cannot_reach_a_message() -> None:
    """No `f"Name: {value}"` path: assemble takes only checked HeaderLines, and a HeaderLine is checked."""
    with pytest.raises(TypeError, match=r"assemble takes header lines made by mime\.header"):
        mime.assemble([mime.header("Subject", "x"), "Bcc: victim@evil.example"], "t", "<p>t</p>", "en")  # type: ignore[list-item]
    for raw in ("Subject: x\r\nBcc: victim@evil.example", "Subject: x\r\n\r\nbody", "Subject: x\n", "no colon"):
        with pytest.raises(mime.HeaderError, match="not a well-formed header line"):
            mime.HeaderLine(raw)
    assert mime.HeaderLine("Subject: a\r\n folded") == "Subject: a\r\n folded"


def test_a_word_too_long_for_one_header_line_is_refused_not_sent() -> None:
    """RFC 5322 allows 998 characters a line; a server refuses a longer one (500, for every email alike)."""
    url = "<https://shop.example/" + "u" * 940 + ">"
    line = mime.header("List-Unsubscribe", url)  # 981 characters with its name: one line
    assert max(len(part) for part in line.split("\r\n")) <= mime.MAX_HARD_LINE
    with pytest.raises(mime.HeaderError, match="cannot be folded under RFC 5322's 998"):
        mime.header("List-Unsubscribe", url.replace(">", "u" * 40 + ">"))
