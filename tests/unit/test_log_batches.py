"""`plugin logs` in batches: the server groups lines (LogsRequest.batched), the CLI prints each batch escaped."""

from __future__ import annotations

import io
import queue

from sysops.cli.log_tail import print_batches
from sysops.safe_text import escape_controls
from sysops.server.log_batches import BATCH_CHARS, batched_texts, drain_batch


def test_lines_are_grouped_up_to_the_batch_size_in_order() -> None:
    lines = [f"log line {n}" if n % 7 else "" for n in range(100_000)] + ["L" * (BATCH_CHARS + 5), "after"]
    texts = list(batched_texts(iter(lines), batched=True))
    assert "\n".join(texts).split("\n") == lines
    assert 5 < len(texts) < 20  # grouped, not one message per line
    assert all(len(text) <= BATCH_CHARS for text in texts if not text.startswith("L"))


def test_an_unbatched_caller_gets_one_line_each() -> None:
    assert list(batched_texts(iter(["a", "", "b"]), batched=False)) == ["a", "", "b"]


def test_a_follow_sends_what_waits_and_never_waits_for_more() -> None:
    buffered: queue.Queue[str] = queue.Queue()
    assert drain_batch("only", buffered) == "only"
    for line in ("b", "", "c"):
        buffered.put(line)
    assert drain_batch("a", buffered) == "a\nb\n\nc"
    assert buffered.empty()


def test_batches_are_printed_escaped_with_their_newlines() -> None:
    out = io.StringIO()
    print_batches(iter(["one\n\x1b]52;c;x\x07\ntwo\u202e", "", "three"]), follow=False, out=out)
    assert out.getvalue() == "one\n\\x1b]52;c;x\\x07\ntwo\\u202e\n\nthree\n"


def test_printable_batches_go_as_they_are_and_the_rest_is_escaped_like_escape_controls() -> None:
    samples = ["plain\tline\nnext", "é ü 漢字\n", "nbsp\u00a0", "\u2028", "\u2066x", "\ud800", "\x85", "\x7f"]
    samples.append("\x1b[1m")
    samples += [f"ascii {chr(code)} {code}" for code in range(128)]  # every ASCII character: the bytes check
    for sample in samples:
        out = io.StringIO()
        print_batches(iter([sample]), follow=False, out=out)
        assert out.getvalue() == escape_controls(sample) + "\n", sample
