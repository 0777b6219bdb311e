"""The `pixlm` console script: the CLI, with Ctrl-C handled from the first instant this code runs.

Importing the CLI loads numpy, OpenCV and ONNX Runtime (a few tenths of a second); a Ctrl-C then,
or before a command installs its own handlers, ends with status 130 and no traceback. (Before this
runs, in the interpreter's own start-up of a few tens of milliseconds, Python handles it.)
"""


def main() -> None:
    try:
        from pixlm.cli import main as cli

        cli(prog_name="pixlm")
    except (KeyboardInterrupt, ImportError) as e:
        import sys

        # Ctrl-C inside a C extension's import (OpenCV, ONNX Runtime) surfaces as an ImportError
        interrupted = isinstance(e, KeyboardInterrupt) or isinstance(
            e.__cause__ or e.__context__, KeyboardInterrupt
        )
        if not interrupted:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
