"""`pixlm run`: stream sources through a bundle; a thin layer over ``Recognizer.stream``.

No torch here: this is what the camera box runs. The ``pixlm`` group (sdk/cli.py) adds it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from pixlm.runtime import manifest as mf
from pixlm.runtime import regions, runconfig
from pixlm.runtime.defaults import default_bundle_dir
from pixlm.runtime.recognizer import BACKENDS
from pixlm.runtime.stats import RunStats


class _Finite(click.ParamType):
    """A float that is a number: 'nan' and 'inf' are refused (a NaN threshold never fires)."""

    name = "float"

    def convert(self, value, param, ctx):
        v = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


FINITE = _Finite()


class _Seconds(click.ParamType):
    """A positive duration: '1s', '500ms', '2m' or a number of seconds ('1.5')."""

    name = "seconds"
    UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0}

    def convert(self, value, param, ctx):
        if isinstance(value, int | float):
            v = float(value)
        else:
            text = str(value).strip().lower()
            unit = next((u for u in ("ms", "s", "m") if text.endswith(u)), "")
            try:
                v = float(text[: len(text) - len(unit)]) * self.UNITS.get(unit, 1.0)
            except ValueError:
                self.fail(f"{value!r} is not a duration (e.g. 1s, 500ms, 1.5)", param, ctx)
        if not (math.isfinite(v) and v > 0):
            self.fail(f"{value!r}: must be a finite number of seconds above 0", param, ctx)
        return v


SECONDS = _Seconds()


def _parse_boxes(ctx, param, texts: tuple[str, ...]) -> tuple:
    """--include / --exclude x,y,w,h, repeatable: boxes in frame pixels."""
    try:
        out = []
        for t in texts:
            key, box = regions.parse_roi(t)
            if key is not None:
                raise ValueError(f"{t!r}: zones apply to every source; give x,y,w,h without SOURCE=")
            out.append(box)
        return tuple(out)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def parse_grid(text: str | None) -> tuple[int, int] | None:
    """'2x3' -> (2, 3): rows x columns, by the one rule of ``regions.parse_grid`` (``pixlm run
    --grid``, ``pixlm train --tile``, the studies); click's usage error (exit 2) otherwise."""
    if text is None:
        return None
    try:
        return regions.parse_grid(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _parse_roi(ctx, param, texts: tuple[str, ...]) -> list | dict | None:
    """--roi x,y,w,h (every source) or --roi SOURCE=x,y,w,h (that source): a list or a dict of boxes."""
    try:
        parsed = [regions.parse_roi(t) for t in texts]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    keyed = {key is not None for key, _ in parsed}
    if keyed == {True, False}:
        raise click.BadParameter("give every --roi a SOURCE= or none of them")
    if keyed != {True}:
        return [box for _, box in parsed] or None
    by_source: dict[str, list] = {}
    for key, box in parsed:
        by_source.setdefault(key, []).append(box)
    return by_source


def ensure_default_bundle() -> Path:
    """The default bundle, exported from the shipped model on first use (needs the export extra)."""
    path = default_bundle_dir()
    if (path / "manifest.json").exists():
        return path
    if importlib.util.find_spec("torch") is None:
        raise click.ClickException(
            f"no default bundle at {path}, and this machine cannot build one (no torch): "
            "copy a bundle here or pass --bundle DIR"
        )
    click.echo(f"building the default bundle at {path} (first use; `make demo` does this too) ...", err=True)
    p = subprocess.run([sys.executable, "-m", "pixlm.export.cli", "-o", str(path)], stdout=sys.stderr)
    if p.returncode != 0:
        raise click.ClickException("could not build the default bundle (see the lines above)")
    return path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, metavar="SOURCES...", callback=runconfig.fill_sources)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, param, value: runconfig.apply(ctx, value),
    help="Read options and SOURCES from this TOML file (one camera's set-up: docs/runtime.md, "
    '"A camera\'s configuration file"); flags on the command line win.',
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False),
    multiple=True,
    help="Bundle folder from pixlm-export [default: the shipped model's, built on first use]. Twice: "
    "both models on the same frames (an appearance and a motion bundle on one camera); each result "
    'and event says which ("model": the bundle\'s folder name).',
)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option(
    "--precision",
    default=None,
    help="Bundle file to run: fp32, int8, int8-dynamic [default: the bundle's recommendation; "
    "fp32 with --prefix-reuse (exact)].",
)
@click.option(
    "--roi",
    multiple=True,
    metavar="[SOURCE=]x,y,w,h",
    callback=_parse_roi,
    help="Region of interest; repeat for several. SOURCE= (a URI, or its name in results) gives "
    "that source its own; a source without any then reads the whole frame.",
)
@click.option(
    "--grid",
    metavar="RxC",
    default=None,
    callback=lambda ctx, param, value: parse_grid(value),
    help="Split each frame into R x C tiles.",
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=16, show_default=True, help="Most regions per engine call."
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Longest wait to fill a batch.",
)
@click.option("--jsonl", type=click.Path(dir_okay=False), default=None, help="Write JSON Lines results here.")
@click.option(
    "--jsonl-max-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Rotate the JSON Lines at this size: out.jsonl -> out.jsonl.1 (.2, .3 kept; older deleted).",
)
@click.option("--save", type=click.Path(dir_okay=False), default=None, help="Write an overlay video (.mp4).")
@click.option("--show", is_flag=True, help="Show a window (needs a GUI build of OpenCV).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames in all.")
@click.option(
    "--anomaly-threshold",
    type=FINITE,
    default=None,
    help="Bits per pixel above which a region is surprising, for every region; overrides a scene "
    "bundle's calibrated per-region thresholds [default: the bundle's; none: no alerts].",
)
@click.option(
    "--anomaly-score",
    type=click.Choice(["mean", "peak"]),
    default=None,
    help="What the threshold compares: the region's mean surprise, or that of its most "
    "surprising tenth of tokens (peak: better for objects small in the region) [default: the "
    "bundle's, else mean].",
)
@click.option(
    "--alert-after",
    type=SECONDS,
    default=None,
    help="An alert starts when a region has stayed surprising this long, e.g. 1s or 500ms (a walker "
    "passes; a left object stays) [default: the bundle's, else 1s].",
)
@click.option(
    "--alerts/--no-alerts",
    default=True,
    show_default=True,
    help="--no-alerts: no anomaly alerts, whatever the bundle holds (recognition only).",
)
@click.option(
    "--alert-end-after",
    type=SECONDS,
    default=None,
    help="An alert ends when its region has been quiet this long [default: the bundle's, else 2s].",
)
@click.option(
    "--alert-update-every",
    type=SECONDS,
    default=None,
    help="While an alert stays open, at most one update event per region this often [default: "
    "the bundle's, else 5s].",
)
@click.option(
    "--include",
    multiple=True,
    metavar="x,y,w,h",
    callback=_parse_boxes,
    help="Alert only in regions mostly inside these boxes (repeat for several).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="x,y,w,h",
    callback=_parse_boxes,
    help="No alerts in regions mostly inside these boxes, e.g. a road or a tree (repeat).",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    help="Keep every Nth frame of each source [default: a scene bundle's, else 1].",
)
@click.option(
    "--realtime", is_flag=True, help="Pace files at their frame rate (default: as fast as possible)."
)
@click.option(
    "--loop",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Play files N times; 0 plays them forever (a file as a demo camera).",
)
@click.option(
    "--prefix-reuse/--no-prefix-reuse",
    default=False,
    show_default=True,
    help="Reuse each region's KV cache up to its first changed token (exact: runs the fp32 file). "
    "Off by default: on a CPU the dynamic-INT8 full pass is as fast even on a static scene "
    "(docs/performance.md).",
)
@click.option(
    "--unknown/--no-unknown",
    default=True,
    show_default=True,
    help="Label regions unlike the model's training data 'unknown' (the bundle's open-set gate); "
    "--no-unknown always gives the best label, as a closed-set classifier.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds of silence before a live source is reopened.",
)
@click.option("--reconnect-attempts", type=click.IntRange(min=0), default=10, show_default=True)
@click.option(
    "--metrics-every",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds between metrics lines.",
)
@click.option(
    "--stats-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="At exit, write the run's statistics here as JSON (frames, fps, ms per stage, sources, "
    "engine calls, prefix reuse, events, delivery buckets), replaced whole.",
)
@click.option(
    "--snapshots",
    type=click.Path(file_okay=False),
    default=None,
    help="Save a JPEG of the frame and of the region for each anomaly event here; events name them.",
)
@click.option(
    "--snapshots-max-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Keep the snapshot folder under this size, oldest deleted first [default: 1,000 pairs].",
)
@click.option(
    "--serve",
    metavar="HOST:PORT",
    default=None,
    help="Live view in the browser (each source's overlay, latest events, metrics line) and "
    "Prometheus /metrics; a bare PORT binds 127.0.0.1 only; any other address needs a token.",
)
@click.option(
    "--serve-token",
    metavar="TOKEN",
    envvar="PIXLM_SERVE_TOKEN",
    default=None,
    help="Require ?token=TOKEN or 'Authorization: Bearer TOKEN'; better from the environment "
    "variable PIXLM_SERVE_TOKEN, which ps does not show.",
)
@click.option(
    "--serve-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve the live view over HTTPS with this certificate (PEM).",
)
@click.option(
    "--serve-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The certificate's private key (PEM), if not in --serve-cert.",
)
@click.option(
    "--mqtt",
    metavar="mqtt://HOST[:PORT]/PREFIX",
    default=None,
    help="Publish events to PREFIX/<source>/<kind> (QoS 1) and a retained PREFIX/status.",
)
@click.option("--webhook", metavar="URL", default=None, help="POST each event as JSON, retried with backoff.")
@click.option(
    "--webhook-secret",
    metavar="KEY",
    envvar="PIXLM_WEBHOOK_SECRET",
    default=None,
    help="Sign each webhook body (X-Pixlm-Signature: sha256=HMAC); better from the environment "
    "variable PIXLM_WEBHOOK_SECRET, which ps does not show.",
)
@click.option(
    "--events",
    "event_kinds",
    default="anomaly,label,status",
    show_default=True,
    help="Which events --mqtt and --webhook send (comma-separated).",
)
@click.option("-q", "--quiet", is_flag=True, help="No per-frame lines on stdout.")
def run(**options) -> None:
    """Recognize what SOURCES show, frame by frame, with anomaly scores.

    \b
    SOURCES are URIs, any mix of:
      0, /dev/video0          V4L2 camera        csi://0          Jetson CSI camera
      rtsp://host:8554/cam    network camera     http://host/x    MJPEG camera
      clip.mp4                video file         img.png          one image
      frames/                 folder of images   'frames/*.png'   glob of images
    \b
    Examples:
      pixlm run /usr/share/doc/opencv-doc/examples/data/vtest.avi --grid 2x2 \\
          --jsonl out.jsonl --save out.mp4
      pixlm run rtsp://127.0.0.1:8554/cam --roi 0,0,320,240 --anomaly-threshold 0.5
      pixlm run clip.mp4 --bundle build/vtest-scene --grid 6x8 --jsonl alerts.jsonl
      pixlm run clip.mp4 --bundle build/vtest-scene --bundle build/vtest-motion  # looks and motion
      pixlm run --config camera.toml
      PIXLM_SERVE_TOKEN=$(openssl rand -hex 16) pixlm run clip.mp4 --realtime --loop 0 \\
          --serve 0.0.0.0:8080 --mqtt mqtt://broker/pixlm --snapshots snaps/
    \b
    Events (anomaly alerts: start, update, end; label changes; source status) go to --jsonl,
    --mqtt, --webhook and the --serve page in one JSON schema (docs/runtime.md, "Events out").
    A scene bundle's calibrated alert thresholds, stride and persistence apply on their own.
    """
    _run(RunConfig(**options))


@dataclass(frozen=True)
class RunConfig:
    """``pixlm run``'s options, as click parsed them (names, defaults and help: the options above)."""

    sources: tuple[str, ...]
    bundle: tuple[str, ...]  # none: the default bundle; several: all on the same frames
    backend: str
    precision: str | None
    roi: list | dict | None  # boxes for every source, or by source
    grid: tuple[int, int] | None
    batch: int
    max_wait_ms: float
    jsonl: str | None
    jsonl_max_mb: float | None
    save: str | None
    show: bool
    max_frames: int | None
    anomaly_threshold: float | None
    anomaly_score: str | None
    alert_after: float | None
    alerts: bool
    alert_end_after: float | None
    alert_update_every: float | None
    include: tuple
    exclude: tuple
    stride: int | None
    realtime: bool
    loop: int
    prefix_reuse: bool
    unknown: bool
    threads: int | None
    timeout_s: float
    reconnect_attempts: int
    metrics_every: float
    stats_json: str | None
    snapshots: str | None
    snapshots_max_mb: float | None
    serve: str | None
    serve_token: str | None
    serve_cert: str | None
    serve_key: str | None
    mqtt: str | None
    webhook: str | None
    webhook_secret: str | None
    event_kinds: str
    quiet: bool


class _Signals:
    """SIGINT and SIGTERM during a run: the first stops the stream, the second exits at once.

    Installed first, before the imports of the steps, and never raises: a KeyboardInterrupt inside
    an import is swallowed by libraries' optional `try: import` (the run went on as if never
    interrupted) or becomes an ImportError. Set-up finishes (about a second), then nothing streams.
    Kept until the outputs are closed: a second signal exits at once, outputs not closed."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal
        self.streamer = None  # once made: the first signal ends its loop after the current batch
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum, _frame) -> None:
        if self.signum is not None:
            name = signal.Signals(signum).name
            os.write(2, f"second {name}: exiting now, outputs not closed\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        if self.streamer is not None:
            self.streamer.stop()  # ends the loop after the current batch; outputs then close

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# -- the steps of a run, in order ----------------------------------------------------------------
def _run(cfg: RunConfig) -> None:
    """Check the options, open the recognizer and the outputs, stream, close, summarise."""
    signals = _Signals()
    outputs = None
    try:
        kinds = _check_options(cfg)
        _quiet_opencv()
        _check_webhook_secret(cfg.webhook, cfg.webhook_secret)
        from pixlm.runtime.outputs import Outputs

        outputs = Outputs(on_warning=lambda line: click.echo(line, err=True))
        recs = _open_recognizers(cfg)
        rec = recs[0]
        video, server = _add_outputs(cfg, outputs, kinds)
        streamer = signals.streamer = _make_streamer(cfg, recs, outputs, server)
        if signals.signum is None:  # a signal during set-up: close the outputs, stream nothing
            with streamer:
                for fr in streamer:
                    outputs.frame(fr)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if outputs is not None:
            outputs.close()  # the network outputs drain together, within one bound
        signals.restore()
    stats = RunStats.of(streamer, outputs)  # after the close: the delivery buckets are final
    stats_failure = _write_stats(cfg.stats_json, stats) if cfg.stats_json else None
    _summarise(cfg, stats, rec, outputs, video, signals.signum, stats_failure)


def _check_options(cfg: RunConfig) -> tuple[str, ...]:
    """Usage errors (exit 2) before anything loads; returns the event kinds --events names."""
    from pixlm.runtime.records import KINDS
    from pixlm.runtime.sources import source_names

    _check_serve(cfg.serve, cfg.serve_token, cfg.serve_cert, cfg.serve_key)
    if cfg.roi and cfg.grid:
        raise click.UsageError("give --roi or --grid, not both")
    if not cfg.alerts and cfg.anomaly_threshold is not None:
        raise click.UsageError("--no-alerts and --anomaly-threshold contradict each other")
    try:  # an --roi SOURCE= that names no source: a usage error now, not an empty batch later
        regions.rois_per_source(cfg.roi, cfg.sources, source_names(list(cfg.sources)))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--roi'") from None
    if cfg.prefix_reuse and cfg.precision and not mf.exact_under_reuse(cfg.precision):
        raise click.BadParameter(
            f"{cfg.precision} quantizes each call differently, so --prefix-reuse would not be exact: "
            "drop one of them, or run fp32 or int8",
            param_hint="--precision",
        )
    kinds = tuple(k.strip() for k in cfg.event_kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        choices = ", ".join(KINDS)
        raise click.BadParameter(f"{cfg.event_kinds!r}: choose from {choices}", param_hint="--events")
    if cfg.stats_json and not Path(cfg.stats_json).absolute().parent.is_dir():
        raise click.BadParameter(f"{cfg.stats_json}: no such folder", param_hint="--stats-json")
    return kinds


def _quiet_opencv() -> None:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages: quiet (events say it)
    import cv2

    cv2.setNumThreads(1)  # frames are small work items: OpenCV's pool would only fight the engine
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no WARN lines before our Error:


def _open_recognizers(cfg: RunConfig) -> list:
    from pixlm.runtime.bundle import warnings_to
    from pixlm.runtime.recognizer import Recognizer

    with warnings_to(lambda line: click.echo(line, err=True)):  # no manifest hash, gate off
        return [
            Recognizer.open(
                bundle,
                cfg.backend,
                cfg.precision,
                threads=cfg.threads,
                exact_reuse=cfg.prefix_reuse,
                unknown=cfg.unknown,
            )
            for bundle in (cfg.bundle or (ensure_default_bundle(),))
        ]


def _add_outputs(cfg: RunConfig, outputs, kinds: tuple[str, ...]) -> tuple:
    """Every output the options ask for, in this order; returns the overlay video and the live
    server (None when not asked for), which the summary and the streamer need."""
    from pixlm.runtime.outputs import CallbackSink, SnapshotWriter
    from pixlm.runtime.outputs.jsonl import JsonlSink
    from pixlm.runtime.outputs.video import VideoSink, WindowSink
    from pixlm.runtime.sources import source_names

    video = server = None
    if cfg.jsonl:
        outputs.add(JsonlSink(cfg.jsonl, max_bytes=_bytes(cfg.jsonl_max_mb)))
    if cfg.save:
        video = VideoSink(cfg.save, list(cfg.sources))
        outputs.add(video)
    if cfg.show:
        outputs.add(WindowSink())
    if cfg.snapshots:
        outputs.snapshots = SnapshotWriter(cfg.snapshots, max_bytes=_bytes(cfg.snapshots_max_mb))
    if cfg.mqtt:
        from pixlm.runtime.outputs.mqtt import MqttSink

        outputs.add(MqttSink(cfg.mqtt, kinds=kinds))
    if cfg.webhook:
        from pixlm.runtime.outputs.webhook import WebhookSink

        outputs.add(WebhookSink(cfg.webhook, kinds=kinds, secret=cfg.webhook_secret))
    if cfg.serve:
        from pixlm.runtime.outputs.server import LiveServer

        server = LiveServer(
            cfg.serve,
            source_names(list(cfg.sources)),
            token=cfg.serve_token,
            cert=cfg.serve_cert,
            key=cfg.serve_key,
        )
        outputs.add(server)
        click.echo(f"live view: {server.address}" + server.access_note(), err=True)  # never the token
    if not cfg.quiet:
        outputs.add(CallbackSink(_print_frame))
    return video, server


def alert_settings(cfg: RunConfig, rec) -> dict:
    """The Streamer's alert options: the bundle's calibrated rules, grid, stride and score, each
    unless an option overrides it; a warning says when a scene bundle cannot alert as run. ``rec``:
    a recognizer, or several (the first's grid, stride and score; each its own rules)."""
    if isinstance(rec, list):
        given = [
            flag
            for flag, v in (
                ("--anomaly-threshold", cfg.anomaly_threshold),
                ("--anomaly-score", cfg.anomaly_score),
                ("--alert-after", cfg.alert_after),
                ("--alert-end-after", cfg.alert_end_after),
            )
            if v is not None
        ]
        if given and cfg.alerts:
            raise click.UsageError(
                f"{', '.join(given)}: with two bundles each alerts by its own calibrated rules (their "
                "scores differ in scale); run one bundle to override them"
            )
        each = [alert_settings(cfg, r) for r in rec]
        if len({str(e["grid"]) for e in each}) > 1:
            raise click.UsageError(
                "the bundles' alert thresholds are for different grids: give --grid RxC for both"
            )
        return each[0] | {"alerts": [e.get("alerts") for e in each]} if len(each) > 1 else each[0]
    if not cfg.alerts:
        return dict(grid=cfg.grid, stride=cfg.stride or 1, anomaly_score=cfg.anomaly_score or "mean")
    rules = rec.bundle.alert_rules
    grid = cfg.grid or (rules.grid if rules is not None and not cfg.roi else None)
    if rules is not None and rules.grid and grid != rules.grid and cfg.anomaly_threshold is None:
        r, c = rules.grid
        click.echo(
            f"warning: the bundle's alert thresholds are for a {r}x{c} grid: no alerts here; "
            f"run with --grid {r}x{c}, or give --anomaly-threshold T",
            err=True,
        )
        rules = None
    elif rules is None and cfg.anomaly_threshold is None and not rec.labels:
        click.echo(
            "warning: this scene bundle holds no alert thresholds (exported by an older pixlm, or "
            "without --alert-frames): no alerts; give --anomaly-threshold T, or re-export it with "
            "pixlm-export --alert-frames A:B",
            err=True,
        )
    stride = cfg.stride or (int(rules.calibration.get("stride", 1)) if rules is not None else 1)
    score = cfg.anomaly_score or (rules.score if rules is not None else "mean")
    zones = regions.Zones(cfg.include, cfg.exclude) if cfg.include or cfg.exclude else None
    return dict(
        grid=grid,
        stride=stride,
        alerts=rules,
        anomaly_threshold=cfg.anomaly_threshold,
        anomaly_score=score,
        alert_after=cfg.alert_after,
        alert_end_after=cfg.alert_end_after,
        alert_update_every=cfg.alert_update_every,
        zones=zones,
    )


def _make_streamer(cfg: RunConfig, recs: list, outputs, server):
    from pixlm.runtime.stream import Streamer

    streamer = Streamer(
        recs if len(recs) > 1 else recs[0],
        cfg.sources,
        rois=cfg.roi,
        max_batch=cfg.batch,
        max_wait_ms=cfg.max_wait_ms,
        prefix_reuse=cfg.prefix_reuse,
        nll_map=bool(cfg.save or cfg.show or cfg.serve),
        max_frames=cfg.max_frames,
        **alert_settings(cfg, recs if len(recs) > 1 else recs[0]),
        realtime=cfg.realtime,
        loop=cfg.loop,
        timeout_s=cfg.timeout_s,
        reconnect_attempts=cfg.reconnect_attempts,
        on_event=lambda e: _on_event(e, outputs),
        on_metrics=lambda line: _on_metrics(line, server),
        metrics_every=cfg.metrics_every,
    )
    if server is not None:
        server.attach(streamer)
    return streamer


def _write_stats(path: str, stats: RunStats) -> str | None:
    """Write ``--stats-json``; a failure (full disk, folder gone) is returned, to be reported as a
    failed output after the closing line, not raised before it."""
    try:
        stats.write_json(path)
    except OSError as e:
        return f"--stats-json {path}: {e.strerror or e}"
    return None


def _summarise(
    cfg: RunConfig, stats: RunStats, rec, outputs, video, signum: int | None, stats_failure: str | None = None
) -> None:
    """The closing line, then the exit status: 1 when nothing streamed or an output failed (the
    stats file included), 128 + the signal when one stopped the run."""
    n = stats.frames
    if signum is None:
        failed = [s.name for s in stats.sources if s.status == "error"]
        if n == 0 or len(failed) == len(stats.sources):
            what = "no source delivered a frame" if n == 0 else "every source ended in error"
            if n == 0 and rec.tokenizer.kind == "motion":
                what += " (a motion bundle measures motion between frames: a source needs two at least)"
            raise click.ClickException(f"{what} ({n} frames; see the status lines above)")
    msg = f"{n} frames from {len(cfg.sources)} source(s)"
    if cfg.unknown and rec.labels and rec.gate is None:
        msg += "; open-set gate OFF (every region labelled, none 'unknown')"
    if cfg.jsonl:
        msg += f"; results in {cfg.jsonl}"
    if video is not None and video.files:
        msg += "; overlay video in " + ", ".join(str(f) for f in video.files)
    events = stats.events_by_kind()
    if any(events.values()):
        msg += "; events: " + ", ".join(f"{k} {v}" for k, v in events.items())
    if outputs.snapshots is not None:
        msg += f"; {outputs.snapshots.written} snapshot(s) in {cfg.snapshots}"
    for name, delivery in stats.deliveries:
        msg += f"; {name}: {delivery.summary()}"
    click.echo(msg, err=True)
    failures = [f"{name} ({why})" for name, why in outputs.failed().items()]
    if stats_failure:
        failures.append(stats_failure)
    failed = "; ".join(failures)
    if signum is not None:
        click.echo(f"stopped by {signal.Signals(signum).name}; all outputs closed", err=True)
        if failed:
            click.echo(f"failed output(s): {failed}", err=True)
        sys.exit(128 + signum)
    if failed:
        raise click.ClickException(f"failed output(s): {failed}")


def _check_webhook_secret(webhook: str | None, secret: str | None) -> None:
    """An empty secret (an unset variable) would sign nothing without a word: refuse it, and a
    secret for no webhook."""
    ctx = click.get_current_context()
    from_argv = ctx.get_parameter_source("webhook_secret") == click.core.ParameterSource.COMMANDLINE
    if secret == "" or (not from_argv and os.environ.get("PIXLM_WEBHOOK_SECRET") == ""):
        raise click.BadParameter(
            "the webhook secret is empty (an unset variable?)", param_hint="--webhook-secret"
        )
    if secret is not None and from_argv and not webhook:
        raise click.UsageError("--webhook-secret without --webhook")


def _check_serve(serve: str | None, token: str | None, cert: str | None, key: str | None) -> None:
    """--serve's usage errors (exit 2) before the model loads: an address that does not parse, an
    empty token, an address beyond this machine without a token (outputs/server.py has the rules),
    and --serve-token, --serve-cert or --serve-key without --serve."""
    ctx = click.get_current_context()
    if not serve:
        for name in ("serve_token", "serve_cert", "serve_key"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} needs --serve HOST:PORT")
        return
    if key and not cert:
        raise click.UsageError("--serve-key needs --serve-cert")
    from pixlm.runtime.outputs.server import TOKEN_ENV, check_exposure, parse_address

    if token is None and os.environ.get(TOKEN_ENV) == "":  # click reads an empty variable as unset
        token = ""
    try:
        host, _ = parse_address(serve)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--serve'") from None
    try:
        check_exposure(host, token)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _bytes(mb: float | None) -> int | None:
    return None if mb is None else int(mb * 1e6)


def _on_event(e, outputs) -> None:
    click.echo(f"[{e.status}] {e.source}: {e.message}", err=True)
    outputs.status(e)


def _on_metrics(line: str, server) -> None:
    click.echo(line, err=True)
    if server is not None:
        server.metrics_line = line


def _print_frame(fr) -> None:
    parts = [
        " ".join(filter(None, (rr.region.name, rr.result.describe(), f"anomaly {rr.result.anomaly:.3f}")))
        + (" EVENT" if rr.anomalous else "")
        for rr in fr.regions
    ]
    click.echo(f"{fr.source}#{fr.index}: " + "; ".join(parts))
