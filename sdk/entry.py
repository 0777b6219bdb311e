"""The `pixlm` console script: the CLI, with Ctrl-C handled from the first instant this code runs.

Importing the CLI loads numpy, OpenCV and ONNX Runtime (a few tenths of a second). A Ctrl-C then
must not raise: a KeyboardInterrupt inside a library's ``try: import x / except ImportError`` is
swallowed as a missing optional module, and the run went on as if never interrupted. So during the
import a handler only records the signal, and a recorded one ends with status 130 once the import
is done. Afterwards a Ctrl-C that reaches click (before a command installs its own handler) is
also 130, not click's "Aborted!" and 1. (Before this runs, in the interpreter's own start-up of a
few tens of milliseconds, Python handles it.)
"""

import signal
import sys


def main() -> None:
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        import click

        from pixlm.cli import main as cli
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        if caught:
            raise KeyboardInterrupt
        code = cli.main(prog_name="pixlm", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
