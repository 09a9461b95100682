"""What initstudy writes where a user reads it: terminal text, Markdown and output files.

Text that came from outside the program (a spec's claim, description or source, a study
name read from a store, a file path, a library's error message) is data, never markup:

- on a terminal (:func:`term` inside Rich markup, :func:`cell` for a table cell) Rich's
  markup in it is escaped (``[/red]`` is shown, not parsed: no ``MarkupError``, no
  ``[link=...]`` hyperlink) and its control characters are dropped (an ESC, BEL or C1
  code would let it set the window title, clear the screen or start a hyperlink itself);
- in Markdown (:func:`md_text`, :func:`md_code`) it cannot open a link, an image, raw
  HTML or a comment (so never one of the README's ``<!-- ... -->`` block markers), nor
  end a code span or fence early;
- files a report writes into its folder replace whatever is there
  (:func:`replace_file`): a symbolic link planted under the file's name is replaced, never
  followed, so nothing outside the folder is written.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

if TYPE_CHECKING:
    from rich.text import Text

__all__ = [
    "Markdown",
    "cell",
    "md_cell",
    "md_code",
    "md_fence",
    "md_text",
    "plain",
    "replace_file",
    "term",
]

_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""Control characters a terminal (or a text viewer) acts on: C0 but tab and newline, DEL,
C1 (ESC's 8-bit forms), and the bidirectional overrides that reorder what is shown."""
_MD_ESCAPE = re.compile(r"[\\`]|\](?=[(\[])|<(?=[A-Za-z/!?])")
"""In Markdown text: a backslash or backtick (code spans), ``]`` before ``(`` or ``[`` (an
inline or reference link, an image) and ``<`` before what would open raw HTML, a comment
or an autolink."""


def plain(text: object) -> str:
    """``text`` as a string without control characters (tab and newline kept)."""
    return _CONTROL.sub("", str(text))


def term(text: object) -> str:
    """``text`` made safe to put inside Rich markup: control characters dropped, markup
    escaped. Trailing backslashes are doubled, so they cannot escape a tag that follows."""
    body = plain(text)
    stripped = body.rstrip("\\")
    return escape(stripped) + "\\" * (2 * (len(body) - len(stripped)))


def cell(text: object) -> Text:
    """``text`` as a Rich table cell (or anything Rich prints): never parsed as markup."""
    from rich.text import Text

    return Text(plain(text))


def md_text(text: object) -> str:
    """``text`` as Markdown inline text: control characters dropped, nothing in it a link,
    an image, raw HTML, a comment or a code span. ``<`` becomes ``&lt;`` (a backslash
    would leave ``<!--`` in the file, where a marker search would find it)."""

    def one(match: re.Match[str]) -> str:
        char = match.group()
        return "&lt;" if char == "<" else "\\" + char

    return _MD_ESCAPE.sub(one, plain(text))


class Markdown(str):
    """Text that is Markdown already, its outside parts escaped when it was built (a link
    to a study's report, a file name as code): :func:`md_cell` leaves it as it is."""

    __slots__ = ()


def md_cell(text: object) -> str:
    """``text`` as a Markdown table cell: :func:`md_text` (unless it is :class:`Markdown`
    already), ``|`` escaped, on one line."""
    safe = text if isinstance(text, Markdown) else md_text(text)
    return safe.replace("|", "\\|").replace("\n", " ")


def md_code(text: object) -> Markdown:
    """``text`` as one Markdown code span (its backticks inside cannot end it)."""
    body = plain(text).replace("\n", " ")
    ticks = "`" * (max((len(m) for m in re.findall("`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return Markdown(f"{ticks}{pad}{body}{pad}{ticks}")


def md_fence(text: str) -> str:
    """The backtick fence for a code block holding ``text``: longer than any run of
    backticks in it (at least three)."""
    return "`" * max(3, max((len(m) for m in re.findall("`+", text)), default=0) + 1)


def replace_file(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` all at once: into a new file of a fresh name beside it,
    then renamed over ``path``. Whatever ``path`` was (a file, a symbolic link to anywhere)
    is replaced, never written through; a reader never sees half a file. Returns ``path``.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: a new file (a link planted under this name too is refused, not followed);
    # mode 0o666 less the umask, as for any file written with open()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
