"""MIME assembly: the bytes of a multipart/alternative email, built with the stdlib's encoders.

`EmailMessage` and its generator parse every header into a tree and fold it again; profiled,
that took about 80 % of rendering time (under 300 messages/s on one core). The messages this
project sends have one fixed shape, so they are assembled here from the same stdlib parts the
generator uses (`email.utils` for addresses and dates, base64 for the bodies and for RFC 2047
encoded words), at thousands per second. Every
test parses the result back with `email` (policy default) and checks it; `Email.parsed()`
gives that view.

The output is 7-bit (any SMTP server takes it), lines end in CRLF, header lines are folded at 78
characters where the value allows it (a single URL longer than that stays whole, as RFC 5322
permits up to 998).

Header injection is impossible by construction: `assemble` takes only `HeaderLine`s, a `HeaderLine`
is checked when it is made (one field name, then folded lines each starting with a space, no other
CR, LF, NUL or control character), and `header` / `address_header`, the only way the project makes
them, refuse a name or value holding a control character (CR, LF, NUL, TAB, DEL, C1, U+2028/9)
with a HeaderError that names the header. Free text from the shop is cleaned before it gets here
(render.header_safe); addresses and URLs from the params are validated as such (config.py).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formataddr
from functools import lru_cache

CRLF = "\r\n"
MAX_LINE = 78
MAX_HARD_LINE = 998  # RFC 5322 2.1.1: no line longer, without its CRLF
# One addr-spec as the envelope takes it: no space, no angle bracket, quote, comma or semicolon (what
# classify.email_problem lets through, so that an address it takes is never refused here).
_ADDR_SPEC_RE = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+")
# Field names: printable ASCII but the colon (RFC 5322 2.2). Values: no control character at all
# (C0 with TAB, DEL, C1) and no Unicode line or paragraph separator, which some clients break lines at.
_FIELD_NAME_RE = re.compile(r"[!-9;-~]+")
UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # render.header_safe cleans the same
# A finished header line: `Name: ...`, folded only as CRLF + space, printable ASCII otherwise.
_HEADER_LINE_RE = re.compile(r"[!-9;-~]+:(?: [ -~]*)?(?:\r\n [ -~]*)*")


class HeaderError(ValueError):
    """A header name or value that would break the header block (a CR, LF, NUL or other control)."""


class HeaderLine(str):
    """One finished header line. Checked when made, so that no raw `f"Name: {value}"` with a CR or LF
    in it can reach a message: `assemble` takes nothing else."""

    __slots__ = ()

    def __new__(cls, line: str) -> HeaderLine:
        if not _HEADER_LINE_RE.fullmatch(line):
            raise HeaderError(f"not a well-formed header line (one field, folded with CRLF + space): {line!r}")
        return super().__new__(cls, line)


def _checked(line: str) -> HeaderLine:
    """A HeaderLine from a line whose name and value `_refuse_unsafe` already checked (no second regex)."""
    return str.__new__(HeaderLine, line)


@lru_cache(maxsize=64)
def _field_name(name: str) -> bool:
    return _FIELD_NAME_RE.fullmatch(name) is not None


def _refuse_unsafe(name: str, what: str, value: str) -> None:
    if not _field_name(name):
        raise HeaderError(f"{name!r} is not a header field name")
    found = None if value.isprintable() else UNSAFE_RE.search(value)  # isprintable: the fast path (C, no regex)
    if found:
        raise HeaderError(
            f"header {name}: the {what} holds a control character ({found.group()[0]!r}: CR, LF, NUL and the like"
            f" would inject headers or a body), refused: {value!r}"
        )


@dataclass(frozen=True)
class Email:
    """One finished message: what the SMTP envelope and the audit need, and the bytes to send."""

    message_id: str
    recipient: str  # the envelope recipient (addr-spec)
    data: bytes

    def as_bytes(self) -> bytes:
        return self.data

    def parsed(self) -> EmailMessage:
        """The message as a mail client reads it."""
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 encoded words (`=?utf-8?b?...?=`, at most 64 characters each), split
    between characters, never inside one; decoders join adjacent words without the space between."""
    whole = text.encode("utf-8")
    if len(whole) <= 39:  # the common case: one word
        return [f"=?utf-8?b?{base64.b64encode(whole).decode('ascii')}?="] if whole else []
    words, chunk = [], b""
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > 39:  # 39 bytes -> 52 base64 characters + 12 of markup = 64
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words if w]


def _fold(name: str, words: list[str]) -> HeaderLine:
    """`Name: w1 w2 ...` with a CRLF before a space wherever a line would pass 78 characters."""
    lines = [f"{name}:"]
    for word in words:
        fresh = lines[-1] == (f"{name}:" if len(lines) == 1 else "")
        if not fresh and len(lines[-1]) + 1 + len(word) > MAX_LINE:
            lines.append("")
        lines[-1] += f" {word}"
    longest = max(len(line) for line in lines)
    if longest > MAX_HARD_LINE:  # one word too long to fold: a server refuses the whole message (500)
        raise HeaderError(
            f"header {name}: a word of {longest} characters cannot be folded under RFC 5322's {MAX_HARD_LINE}"
            " characters a line; the server would refuse the message"
        )
    return _checked(CRLF.join(lines))


def header(name: str, value: str) -> HeaderLine:
    """`Name: value` folded at 78 characters; non-ASCII values as RFC 2047 encoded words.
    Raises HeaderError for a control character (CR, LF, NUL, ...) in the name or value."""
    _refuse_unsafe(name, "value", value)
    if not value.isascii():
        return _fold(name, encoded_words(value))
    return _fold(name, value.split(" "))


def address_header(name: str, display_name: str, addr_spec: str) -> HeaderLine:
    """`To: Name <addr>`: a short ASCII name as the standard quotes it, any other as encoded words.
    Raises HeaderError for a control character in either part, or an address that is not one addr-spec."""
    _refuse_unsafe(name, "display name", display_name)
    _refuse_unsafe(name, "address", addr_spec)
    if not addr_spec.isascii() or not _ADDR_SPEC_RE.fullmatch(addr_spec):
        raise HeaderError(f"header {name}: {addr_spec!r} is not one plain email address (local@domain)")
    if not display_name:
        return _checked(f"{name}: {addr_spec}")
    plain = formataddr((display_name, addr_spec))
    if display_name.isascii() and len(name) + 2 + len(plain) <= MAX_LINE:
        return _checked(f"{name}: {plain}")
    return _fold(name, [*encoded_words(display_name), f"<{addr_spec}>"])


def _base64(text: str) -> str:
    """A text body in canonical form (CRLF line ends), base64 in lines of 76."""
    encoded = base64.b64encode(text.replace("\r\n", "\n").replace("\n", CRLF).encode("utf-8")).decode("ascii")
    return CRLF.join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + CRLF


def assemble(headers: Sequence[HeaderLine], text: str, html: str, content_language: str) -> bytes:
    """A multipart/alternative message from finished header lines and the two bodies (UTF-8).
    Only HeaderLines are taken (made by `header` / `address_header`): a plain string is a TypeError."""
    raw = [h for h in headers if not isinstance(h, HeaderLine)]
    if raw:
        raise TypeError(f"assemble takes header lines made by mime.header or mime.address_header, got {raw[0]!r}")
    _refuse_unsafe("Content-Language", "value", content_language)
    boundary = f"=_bo_{uuid.uuid4().hex}"  # "_" is not in the base64 alphabet: never in a body
    parts = [
        *headers,
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"',
        f"Content-Language: {content_language}",
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: base64",
        "",
        _base64(text) + f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: base64",
        "",
        _base64(html) + f"--{boundary}--",
        "",
    ]
    return CRLF.join(parts).encode("ascii")
