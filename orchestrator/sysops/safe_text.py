"""Plugin-controlled text made safe to show on a terminal, and long messages capped.

A plugin is untrusted: its results, errors, logs and crash details can carry escape sequences that set
the clipboard (OSC 52), retitle or rewrite the terminal, move the cursor, or reorder what the operator
reads (bidi overrides). Everything sysops prints from a plugin goes through `escape_controls`; a
message sysops echoes back (an error naming a plugin's text or a user's arguments) also goes through
`cap`. Standard library only: this is on the hot path of `sysops <command>`.
"""

from __future__ import annotations

import re

#: C0 controls but newline and tab, DEL, C1 controls, the Unicode line and paragraph separators, the
#: bidi embedding/override/isolate characters, and lone surrogates (bytes of a command line that were not
#: UTF-8: stderr would print each as 6 characters, past the cap).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_IN_A_LINE = re.compile(f"{_UNSAFE.pattern[:-1]}\n]")
#: Echoed messages longer than this are cut, saying how much was left out.
MESSAGE_CAP = 500


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, one_line: bool = False) -> str:
    """Replace control characters (ESC, CR, backspace, C1, bidi overrides...) by visible escapes like `\\x1b`.

    Tabs stay as they are, and newlines unless `one_line`; everything else is printable afterwards.
    """
    return (_UNSAFE_IN_A_LINE if one_line else _UNSAFE).sub(_visible, text)


def cap(text: str, limit: int = MESSAGE_CAP) -> str:
    """Cut `text` to `limit` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def for_terminal(text: str, limit: int = MESSAGE_CAP) -> str:
    """A plugin-controlled message as sysops echoes it on one line: escaped (newlines too), then capped.

    The cap counts the escaped text (an escape is up to 6 characters: a message of control characters
    would be 6 times `limit` long) and never cuts an escape in two.
    """
    escaped = escape_controls(text[:limit], one_line=True)
    if len(escaped) <= limit and len(text) <= limit:
        return escaped
    shown = 0
    pieces: list[str] = []
    for character in text[:limit]:
        piece = escape_controls(character, one_line=True)
        if shown + len(piece) > limit:
            break
        pieces.append(piece)
        shown += len(piece)
    return f"{''.join(pieces)}… ({len(text) - len(pieces)} more characters)"
