"""Progress bars: drawn on stderr when it is a terminal, nothing at all otherwise."""

from __future__ import annotations

import io
import sys

from pixlm.progress import above, bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_on_a_terminal_stderr(monkeypatch, capsys):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert list(bar(range(3), "counting", unit="img")) == [0, 1, 2]
    assert "counting" in term.getvalue() and "3/3" in term.getvalue()
    with bar(desc="inner", total=2, leave=False) as b:
        b.update(2)
    assert "inner" in term.getvalue() and term.getvalue().endswith("\r")  # the inner bar is wiped
    assert capsys.readouterr().out == ""  # never on stdout


def test_bar_is_silent_when_stderr_is_not_a_terminal(capsys):
    assert not sys.stderr.isatty()  # capsys: a pipe, as in logs and CI
    assert list(bar(range(3), "counting")) == [0, 1, 2]
    with bar(desc="inner", total=2, leave=False) as b:
        b.update(2)
    above(print)("a log line")
    assert capsys.readouterr() == ("a log line\n", "")
    list(bar(range(3), "forced", disable=False))  # disable=False draws even into a pipe
    assert "forced" in capsys.readouterr().err


def test_log_lines_go_above_an_open_bar(monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    log = above(lambda s: print(s, file=sys.stderr))
    with bar(desc="outer", total=2) as b:
        b.update(1)
        log("class 0: done")
    out = term.getvalue()
    before, line, after = out.partition("class 0: done\n")
    assert line and before.endswith("\r") and "outer" in after  # bar cleared, line, bar redrawn
