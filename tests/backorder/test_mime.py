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
    text = "\r\n".join([mime.address_header("To", name, "ann@example.com"), "Subject: x", "", "body", ""])
    msg: Any = message_from_bytes(text.encode("ascii"), policy=policy.default)
    (address,) = msg["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ann@example.com")


def test_an_assembled_message_has_the_shape_mail_clients_expect() -> None:
    data = mime.assemble(
        ["From: s@example.com", "To: ann@example.com", "Subject: x"], "Hallo\nWelt ä", "<p>ä</p>", "de"
    )
    msg: Any = message_from_bytes(data, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative" and msg["Content-Language"] == "de"
    text, html = msg.iter_parts()
    assert text.get_content() == "Hallo\r\nWelt ä" and html.get_content() == "<p>ä</p>"
    assert not msg.defects and data.isascii() and b"\r\n\r\n" in data
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))
