"""``pixlm run --config FILE``: a TOML file per camera, read into click's default_map (runtime/runconfig.py).

Real files in tmp_path, and a real click command shaped like ``pixlm run`` (repeatable options, flags, a
callback-parsed --grid, SOURCES nargs=-1) wired the way the cli wires ``runconfig``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pixlm.runtime import runconfig
from pixlm.runtime.runconfig import ConfigError

EXAMPLE = """
    sources = ["rtsp://10.0.0.5:554/stream1"]
    bundle = "build/vtest-scene"
    grid = "6x8"
    stride = 2
    max-frames = 100
    quiet = true
    prefix_reuse = false
    [alerts]
    after = "1s"
    end_after = "5s"
    threshold = 3
    score = "peak"
    [zones]
    exclude = ["0,0,768,96"]
    include = []
    [outputs]
    jsonl = "events.jsonl"
    mqtt = "mqtt://broker:1883/pixlm"
    webhook = ["https://a.example/hook", "https://b.example/hook"]
    snapshots = "snaps/"
    events = "anomaly"
"""


def make_command(alerts: bool = True) -> tuple[click.Command, dict]:
    """A small ``pixlm run``; returns it and the dict its body fills with what click parsed."""
    seen: dict = {}
    alert_options = [
        click.Option(["--alert-after"]),
        click.Option(["--alert-end-after"]),
        click.Option(["--include"], multiple=True),
        click.Option(["--exclude"], multiple=True),
    ]
    params = [
        click.Argument(["sources"], nargs=-1, metavar="SOURCES...", callback=runconfig.fill_sources),
        click.Option(
            ["--config"],
            type=click.Path(dir_okay=False),
            is_eager=True,
            expose_value=False,
            callback=lambda ctx, param, value: runconfig.apply(ctx, value),
        ),
        click.Option(["--bundle"], type=click.Path(file_okay=False)),
        click.Option(["--roi"], multiple=True),
        click.Option(["--grid"], callback=lambda ctx, p, v: v and tuple(int(n) for n in v.split("x"))),
        click.Option(["--stride"], type=click.IntRange(min=1), default=1),
        click.Option(["--max-frames"], type=click.IntRange(min=1)),
        click.Option(["--anomaly-threshold"], type=float),
        click.Option(["--anomaly-score"], type=click.Choice(["mean", "peak"]), default="mean"),
        *(alert_options if alerts else []),
        click.Option(["--jsonl"], type=click.Path(dir_okay=False)),
        click.Option(["--mqtt"]),
        click.Option(["--webhook"], multiple=True),
        click.Option(["--snapshots"], type=click.Path(file_okay=False)),
        click.Option(["--events", "event_kinds"], default="anomaly,label,status"),
        click.Option(["--prefix-reuse/--no-prefix-reuse"], default=True),
        click.Option(["-q", "--quiet"], is_flag=True),
    ]
    return click.Command("run", params=params, callback=lambda **kw: seen.update(kw)), seen


def write(tmp_path: Path, text: str, name: str = "camera.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def invoke(command: click.Command, *args: str, **extra):
    result = CliRunner().invoke(command, list(args), **extra)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_example_file_round_trips_into_the_parsed_options(tmp_path):
    command, seen = make_command()
    path = write(tmp_path, EXAMPLE)
    result = invoke(command, "--config", str(path))
    assert result.exit_code == 0, result.output
    assert seen == {
        "sources": ("rtsp://10.0.0.5:554/stream1",),
        "bundle": "build/vtest-scene",
        "roi": (),
        "grid": (6, 8),
        "stride": 2,
        "max_frames": 100,
        "anomaly_threshold": 3.0,
        "anomaly_score": "peak",
        "alert_after": "1s",
        "alert_end_after": "5s",
        "include": (),
        "exclude": ("0,0,768,96",),
        "jsonl": "events.jsonl",
        "mqtt": "mqtt://broker:1883/pixlm",
        "webhook": ("https://a.example/hook", "https://b.example/hook"),
        "snapshots": "snaps/",
        "event_kinds": "anomaly",
        "prefix_reuse": False,
        "quiet": True,
    }


def test_load_gives_a_default_map_by_option_name(tmp_path):
    command, _ = make_command()
    values = runconfig.load(write(tmp_path, EXAMPLE), runconfig.options_of(command))
    assert values["sources"] == ["rtsp://10.0.0.5:554/stream1"]
    assert values["grid"] == "6x8" and values["stride"] == 2 and values["max_frames"] == 100
    assert values["anomaly_threshold"] == 3 and values["alert_after"] == "1s"
    assert values["exclude"] == ["0,0,768,96"] and values["include"] == []
    assert values["event_kinds"] == "anomaly" and values["quiet"] is True
    assert "config" not in runconfig.options_of(command)  # eager options are not settable from a file


def test_the_command_line_overrides_the_file(tmp_path):
    command, seen = make_command()
    path = write(tmp_path, EXAMPLE)
    args = ["--stride", "5", "--roi", "1,1,2,2", "--exclude", "9,9,9,9", "--prefix-reuse", "clip.mp4"]
    result = invoke(command, "--config", str(path), *args)
    assert result.exit_code == 0, result.output
    assert seen["sources"] == ("clip.mp4",)
    assert seen["stride"] == 5 and seen["roi"] == ("1,1,2,2",) and seen["exclude"] == ("9,9,9,9",)
    assert seen["prefix_reuse"] is True
    assert seen["grid"] == (6, 8) and seen["jsonl"] == "events.jsonl"  # the rest still from the file
    # --config after other flags, too: it is eager
    result = invoke(command, "--stride", "7", "--config", str(path))
    assert (
        result.exit_code == 0 and seen["stride"] == 7 and seen["sources"] == ("rtsp://10.0.0.5:554/stream1",)
    )


def test_the_file_merges_into_an_existing_default_map(tmp_path):
    command, seen = make_command()
    path = write(tmp_path, 'source = "a.mp4"\nstride = 3\n')
    result = invoke(command, "--config", str(path), default_map={"stride": 9, "mqtt": "mqtt://b/x"})
    assert result.exit_code == 0, result.output
    assert seen["stride"] == 3 and seen["mqtt"] == "mqtt://b/x"


@pytest.mark.parametrize(
    ("text", "sources"),
    [
        ('source = "rtsp://cam/1"', ["rtsp://cam/1"]),
        ("source = 0", ["0"]),  # the first V4L2 camera, as `pixlm run 0`
        ('sources = ["a.mp4", "rtsp://cam/2", 1]', ["a.mp4", "rtsp://cam/2", "1"]),
        ('sources = "a.mp4"', ["a.mp4"]),
        ("stride = 2", []),
    ],
)
def test_sources_from_source_or_sources(tmp_path, text, sources):
    command, seen = make_command()
    path = write(tmp_path, text)
    assert runconfig.load(path, runconfig.options_of(command))["sources"] == sources
    result = invoke(command, "--config", str(path))
    if sources:
        assert result.exit_code == 0 and seen["sources"] == tuple(sources)
    else:
        assert result.exit_code == 2 and "Missing argument 'SOURCES...'" in result.output


def test_without_config_the_command_is_unchanged():
    command, seen = make_command()
    assert invoke(command, "x.mp4", "--stride", "2").exit_code == 0
    assert seen["sources"] == ("x.mp4",) and seen["stride"] == 2 and seen["jsonl"] is None
    result = invoke(command)
    assert result.exit_code == 2 and "Missing argument 'SOURCES...'" in result.output


def test_sections_map_as_documented(tmp_path):
    command, _ = make_command()
    known = runconfig.options_of(command)
    text = '[alerts]\nafter = "2s"\nend-after = "4s"\nthreshold = 1.5\nscore = "mean"\n'
    text += '[zones]\ninclude = ["1,2,3,4"]\n[outputs]\nmqtt = "mqtt://b/p"\nstride = 4\n'
    assert runconfig.load(write(tmp_path, text), known) == {
        "alert_after": "2s",
        "alert_end_after": "4s",
        "anomaly_threshold": 1.5,
        "anomaly_score": "mean",
        "include": ["1,2,3,4"],
        "mqtt": "mqtt://b/p",
        "stride": 4,
        "sources": [],
    }


ERRORS = [
    ('jsonll = "x"', 'jsonll: unknown key; did you mean "jsonl"?'),
    ("max-frame = 3", 'max-frame: unknown key; did you mean "max_frames"?'),
    ('[outputs]\njsonll = "x"', '[outputs] jsonll: unknown key; did you mean "jsonl"?'),
    ('[alert]\nafter = "1s"', 'alert: unknown key; did you mean "alerts"?'),
    ("[alerts]\nthreshhold = 3.0", '[alerts] threshhold: unknown key; did you mean "threshold"?'),
    ('[zones]\nroi = ["0,0,1,1"]', "[zones] roi: unknown key"),
    ('config = "other.toml"', "config: unknown key"),
    ("xyzzy = 1", "xyzzy: unknown key"),
    ('[outputs.mqtt]\nhost = "broker"', "[outputs] mqtt: expected a string, got a table"),
    ("stride = [1, 2]", "stride: expected an integer, got a list"),
    ('source = ["a", "b"]', "source: expected a string, got a list"),
    ('stride = "2"', 'stride: expected an integer, got a string ("2")'),
    ("stride = 2.5", "stride: expected an integer, got a number (2.5)"),
    ("[alerts]\nthreshold = true", "[alerts] threshold: expected a number, got a boolean (true)"),
    ('quiet = "yes"', 'quiet: expected true or false, got a string ("yes")'),
    ("jsonl = false", "jsonl: expected a string, got a boolean (false)"),
    ('roi = ["0,0,1,1", 3.5]', "roi[1]: expected a string, got a number (3.5)"),
    ("bundle = 1979-05-27", "bundle: expected a string, got a date/time (1979-05-27)"),
    ("alerts = 3", "alerts: expected a table ([alerts]), got an integer (3)"),
    ("stride = 0", "stride: 0 is not in the range x>=1."),
    ('[alerts]\nscore = "max"', "[alerts] score: 'max' is not one of 'mean', 'peak'."),
    (
        "anomaly_threshold = 1.0\n[alerts]\nthreshold = 2.0",
        "[alerts] threshold: anomaly_threshold set twice (first by anomaly_threshold)",
    ),
    ("max-frames = 1\nmax_frames = 2", "max_frames: max_frames set twice (first by max-frames)"),
    ('source = "a"\nsources = ["b"]', "sources: sources set twice (first by source)"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_each_mistake_is_one_error_naming_file_and_key(tmp_path, text, message):
    command, _ = make_command()
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        runconfig.load(path, runconfig.options_of(command))
    assert str(e.value) == f"{path}: {message}"
    result = invoke(command, "--config", str(path), "x.mp4")  # through click: a usage error, exit 2
    assert result.exit_code == 2 and f"Invalid value for '--config': {path}: {message}" in result.output


def test_section_keys_exist_only_if_the_command_has_the_option(tmp_path):
    command, _ = make_command(alerts=False)  # no --alert-after, --include, --exclude yet
    path = write(tmp_path, '[alerts]\nafter = "1s"\n')
    with pytest.raises(ConfigError, match=r"\[alerts\] after: unknown key$"):
        runconfig.load(path, runconfig.options_of(command))
    with pytest.raises(ConfigError, match=r"\[zones\] exclude: unknown key$"):
        runconfig.load(write(tmp_path, '[zones]\nexclude = ["0,0,1,1"]\n'), runconfig.options_of(command))


def test_toml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, 'bundle = "b"\nstride = \n')
    with pytest.raises(ConfigError) as e:
        runconfig.load(path, runconfig.options_of(make_command()[0]))
    assert str(e.value).startswith(f"{path}: not valid TOML: ") and "line 2" in str(e.value)


def test_unreadable_files(tmp_path):
    known = runconfig.options_of(make_command()[0])
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        runconfig.load(missing, known)
    assert str(e.value) == f"{missing}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as e:
        runconfig.load(tmp_path, known)
    assert str(e.value) == f"{tmp_path}: cannot read: Is a directory"
    binary = tmp_path / "cam.toml"
    binary.write_bytes(b'jsonl = "\xff"\n')
    with pytest.raises(ConfigError) as e:
        runconfig.load(binary, known)
    assert str(e.value) == f"{binary}: not UTF-8 text (byte 9)"
    result = invoke(make_command()[0], "--config", str(missing))
    assert result.exit_code == 2 and f"{missing}: cannot read: No such file or directory" in result.output


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp_path):
    path = write(tmp_path, "stride = 2")
    path.chmod(0)
    with pytest.raises(ConfigError) as e:
        runconfig.load(path, runconfig.options_of(make_command()[0]))
    assert str(e.value) == f"{path}: cannot read: Permission denied"


def test_load_against_the_real_pixlm_run(tmp_path):
    from pixlm.runtime.cli import run

    text = 'source = "clip.mp4"\njsonl = "out.jsonl"\nevents = "anomaly"\n[alerts]\nscore = "peak"\n'
    path = write(tmp_path, text)
    assert runconfig.load(path, runconfig.options_of(run)) == {
        "sources": ["clip.mp4"],
        "jsonl": "out.jsonl",
        "event_kinds": "anomaly",
        "anomaly_score": "peak",
    }
    with pytest.raises(ConfigError, match='jsonll: unknown key; did you mean "jsonl"'):
        runconfig.load(write(tmp_path, 'jsonll = "x"'), runconfig.options_of(run))
