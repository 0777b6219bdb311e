"""``pixlm run --config camera.toml``: one TOML file per camera instead of 30 flags.

A key sets the ``pixlm run`` option of the same name (``max-frames`` or ``max_frames``; a long flag
works too: ``events`` sets ``--events``); three sections group related options::

    # camera.toml
    sources = ["rtsp://10.0.0.5:554/stream1"]   # or: source = "rtsp://..."  (source = 0: /dev/video0)
    bundle = "build/vtest-scene"
    grid = "6x8"                 # or: roi = ["0,0,320,240", ...]
    stride = 2
    [alerts]
    after = "1s"                 # --alert-after
    threshold = 3.0              # --anomaly-threshold
    score = "peak"               # --anomaly-score; any other key X: --alert-X (end_after: --alert-end-after)
    [zones]
    exclude = ["0,0,768,96"]     # --exclude: boxes x,y,w,h that raise no alert
    include = []                 # --include
    [outputs]                    # any key X: --X
    jsonl = "events.jsonl"
    mqtt = "mqtt://broker:1883/pixlm"
    webhook = "https://vms.local/hooks/pixlm"
    snapshots = "snaps/"

Values are what the flag takes (strings as typed on the command line, TOML numbers and booleans for
numeric options and flags, a list for a repeatable option); relative paths are relative to the working
directory, as on the command line. Mistakes stop the run with the file and the key named
(``camera.toml: [outputs] jsonll: unknown key; did you mean "jsonl"?``), never silently ignored.
Which keys exist comes from the click command itself, so a new ``pixlm run`` option is settable at once.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport, when installed
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

SOURCES_KEY = "pixlm.runconfig.sources"  # ctx.meta slot: apply() leaves the file's sources for fill_sources()

# [section] key -> option name: keys renamed, then a prefix for any other key (None: no other keys).
SECTIONS: dict[str, tuple[dict[str, str], str | None]] = {
    "alerts": (
        {"after": "alert_after", "threshold": "anomaly_threshold", "score": "anomaly_score"},
        "alert_",
    ),
    "zones": ({"include": "include", "exclude": "exclude"}, None),
    "outputs": ({}, ""),
}
_KINDS = {"boolean": "bool", "integer": "int", "float": "float"}  # by click type name: "integer range" too
_WANT = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}
# Both named "sources", so that a file giving both is told so.
_SOURCE, _SOURCES = click.Option(["--source", "sources"]), click.Option(["--sources"], multiple=True)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key, ready to show."""


class ParamLike(Protocol):
    """What ``load`` needs to know of an option (a ``click.Option`` is one)."""

    name: str | None
    multiple: bool
    is_flag: bool
    type: click.ParamType


def options_of(command: click.Command) -> dict[str, click.Option]:
    """The keys a file may set for ``command``, to their options: each option's name (``event_kinds``)
    and long flags (``events``). Eager options (``--help``, ``--config``) act before a file is read."""
    known: dict[str, click.Option] = {}
    for p in command.params:
        if isinstance(p, click.Option) and p.name and p.expose_value and not p.is_eager:
            for key in (p.name, *(o.lstrip("-") for o in p.opts if o.startswith("--"))):
                known.setdefault(_norm(key), p)
    return known


def load(path: str | os.PathLike[str], known: Mapping[str, ParamLike]) -> dict[str, Any]:
    """Read ``path`` into a click ``default_map`` for the options in ``known`` (``options_of(the
    command)``), plus ``"sources"`` (a list, empty when the file names none); raise ``ConfigError``
    on any mistake."""
    known = {_norm(k): v for k, v in known.items()}
    data, out, set_by = _read(path), {}, {}

    def fail(where: str, message: str) -> NoReturn:
        raise ConfigError(f"{os.fspath(path)}: {where}: {message}")

    def unknown(where: str, key: str, candidates: list[str]) -> NoReturn:
        close = difflib.get_close_matches(_norm(key), candidates, n=1)
        fail(where, "unknown key" + (f'; did you mean "{close[0]}"?' if close else ""))

    def put(where: str, opt: ParamLike, value: Any) -> None:
        name = opt.name or ""
        if name in set_by:
            fail(where, f"{name} set twice (first by {set_by[name]})")
        set_by[name], out[name] = where, _check(where, opt, value, fail)

    for key, value in data.items():
        if key in ("source", "sources"):
            put(key, _SOURCES if key == "sources" else _SOURCE, value)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                fail(key, f"expected a table ([{key}]), got {_describe(value)}")
            renames, prefix = SECTIONS[key]
            for sub, v in value.items():
                target = renames.get(_norm(sub)) or (None if prefix is None else prefix + _norm(sub))
                if target not in known:
                    mine = [k[len(prefix) :] for k in known if prefix is not None and k.startswith(prefix)]
                    unknown(f"[{key}] {sub}", sub, [k for k, t in renames.items() if t in known] + mine)
                put(f"[{key}] {sub}", known[target], v)
        elif _norm(key) in known:
            put(key, known[_norm(key)], value)
        else:
            unknown(key, key, [*known, *SECTIONS, "sources"])
    if isinstance(out.setdefault("sources", []), str):  # source = "..."
        out["sources"] = [out["sources"]]
    return out


def apply(ctx: click.Context, path: str | os.PathLike[str] | None) -> list[str]:
    """The ``--config FILE`` callback (``is_eager=True``, so it runs before every other parameter): load
    the file against ``ctx.command`` into ``ctx.default_map`` (its keys win over an existing map's) and
    return its sources, also left in ``ctx.meta`` for ``fill_sources``.

    Precedence is click's: a flag on the command line beats an environment variable (PIXLM_SERVE_TOKEN,
    ...), which beats the file, which beats the option's default. Errors are click usage errors (exit 2)."""
    if path is None or ctx.resilient_parsing:
        return []
    try:
        values = load(path, options_of(ctx.command))
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None
    sources = values.pop("sources")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta[SOURCES_KEY] = sources
    return sources


def fill_sources(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """The SOURCES argument's callback (declare it ``nargs=-1`` without ``required``): the command
    line's sources, else the ``--config`` file's; click's "Missing argument" when neither names one."""
    value = tuple(value) or tuple(ctx.meta.get(SOURCES_KEY, ()))
    if not value and not ctx.resilient_parsing:
        raise click.MissingParameter(ctx=ctx, param=param)
    return value


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    name = os.fspath(path)
    if tomllib is None:  # pragma: no cover
        raise ConfigError(f"{name}: reading TOML needs Python 3.11+ or the tomli package")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{name}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not UTF-8 text (byte {e.start})") from None


def _check(where: str, opt: ParamLike, value: Any, fail: Callable[[str, str], NoReturn]) -> Any:
    """``value`` for ``opt`` as default_map wants it, after the TOML type and the option's own type
    (choices, ranges) are checked here, where the file and key can still be named."""
    kind = "bool" if opt.is_flag else _KINDS.get(opt.type.name.split()[0], "str")
    fits = {bool: kind == "bool", int: kind != "bool", float: kind == "float", str: kind == "str"}
    items = value if opt.multiple and isinstance(value, list) else [value]
    for i, v in enumerate(items):
        at = f"{where}[{i}]" if items is value else where
        if not fits.get(type(v), False):  # an int also fits a float, and a string (a port, camera 0)
            fail(at, f"expected {_WANT[kind]}, got {_describe(v)}")
        if kind != "bool":
            try:
                opt.type.convert(str(v) if kind == "str" else v, None, None)
            except click.BadParameter as e:
                fail(at, e.message)
    items = [str(v) if kind == "str" else v for v in items]
    return items if opt.multiple else items[0]


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    kinds = {
        int: "an integer ({})",
        float: "a number ({})",
        str: 'a string ("{}")',
        list: "a list",
        dict: "a table",
    }
    return kinds.get(type(v), "a date/time ({})").format(v)


def _norm(key: str) -> str:
    return key.replace("-", "_")
