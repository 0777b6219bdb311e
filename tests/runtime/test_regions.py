"""Regions of interest and grids: parsed by one rule, keyed to the right source, refused early.

Real parts: the tiny bundle through ONNX Runtime, vtest.avi and baboon.jpg from OpenCV's samples,
a real MJPEG camera (ffmpeg on 127.0.0.1) reached through a URI with a password, and `pixlm run`
in a subprocess with torch blocked.
"""

from __future__ import annotations

import shutil
import time

import pytest
from cameras import free_port

from conftest import VTEST, pixlm_run, read_jsonl
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.regions import parse_grid, parse_roi
from pixlm.runtime.stream import Streamer

BABOON = VTEST.parent / "baboon.jpg"  # 512 x 512; vtest.avi is 768 x 576


@pytest.fixture(scope="module")
def rec(tiny_bundle):
    return Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=2)


def test_grid_and_roi_text_follow_one_rule():
    assert parse_grid("2X3") == (2, 3) and parse_grid("32x32") == (32, 32)
    for bad, words in (("100x100", "more than 1024 regions"), ("0x2", "at least one"), ("2by2", "2x2")):
        with pytest.raises(ValueError, match=words):
            parse_grid(bad)
    assert parse_roi("1,2,3,4") == (None, (1, 2, 3, 4))
    # the last '=' splits: a URI may hold '=' itself
    assert parse_roi("http://cam/x?a=b=0,0,64,64") == ("http://cam/x?a=b", (0, 0, 64, 64))
    for bad in ("1,2,3", "=1,2,3,4", "0,0,0,10", "-1,0,10,10", "cam=a,b,c,d"):
        with pytest.raises(ValueError):
            parse_roi(bad)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--grid", "100x100"], "more than 1024 regions per frame"),
        (["--grid", "0x2"], "at least one row"),
        (["--grid", "2by2"], "must look like 2x2"),
        (["--roi", "0,0,0,10"], "width and height >= 1"),
        (["--roi", "0,0,10,10", "--roi", "clip.mp4=0,0,10,10"], "a SOURCE= or none"),
        (["--roi", "nosuch.avi=0,0,64,64"], "'nosuch.avi': no such source"),
    ],
)
def test_grid_and_roi_errors_are_usage_errors(tiny_bundle, args, words):
    """Exit 2, as the README says of usage errors, before any source or bundle opens."""
    p = pixlm_run(str(VTEST), "--bundle", str(tiny_bundle), *args)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 2 and words in stderr and "Traceback" not in stderr, stderr
    assert sum(line.startswith("Error:") for line in stderr.splitlines()) == 1, stderr


def test_an_roi_for_no_source_is_refused_when_the_stream_is_set_up(rec):
    """A mistyped key failed part-way with 'empty batch: no images to tokenize'; a password typed
    in it is never echoed."""
    with pytest.raises(ValueError, match=r"'vtest\.avi': no such source \(the sources: .*vtest\.avi"):
        Streamer(rec, [str(VTEST)], rois={"vtest.avi": [(0, 0, 64, 64)]})
    with pytest.raises(ValueError, match="no such source") as e:
        Streamer(rec, [str(VTEST)], rois={"rtsp://admin:hunter2@cam/1": [(0, 0, 64, 64)]})
    assert "hunter2" not in str(e.value) and "admin:***@cam" in str(e.value)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_rois_keyed_by_uri_reach_a_password_uri_and_every_copy(rec, procs):
    """Keys are URIs as given (every copy of a repeated one, password and all) or names in results
    ('URI#2': that copy only). Looked up by name, the password URI and the second copy found no
    regions and the stream died with 'empty batch'."""
    port = free_port()
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(VTEST)]
    procs(
        cmd
        + [
            "-an",
            "-c:v",
            "mjpeg",
            "-q:v",
            "5",
            "-f",
            "mpjpeg",
            "-listen",
            "1",
            f"http://127.0.0.1:{port}/cam",
        ]
    )
    camera = f"http://viewer:s3cret@127.0.0.1:{port}/cam"
    rois = {
        camera: [(0, 0, 64, 64)],
        str(VTEST): [(100, 100, 64, 64)],  # both copies ...
        f"{VTEST}#2": [(0, 0, 32, 32), (32, 32, 32, 32)],  # ... but the second has its own
    }
    seen: dict[str, list] = {}
    with Streamer(rec, [camera, str(VTEST), str(VTEST)], rois=rois, timeout_s=10) as s:
        deadline = time.monotonic() + 60
        for fr in s:
            seen.setdefault(fr.source, []).append([rr.region.to_list() for rr in fr.regions])
            if (len(seen) == 3 and min(map(len, seen.values())) >= 3) or time.monotonic() > deadline:
                break
    assert set(seen) == {f"http://viewer:***@127.0.0.1:{port}/cam", str(VTEST), f"{VTEST}#2"}, seen.keys()
    assert all(len(v) >= 3 for v in seen.values()), {k: len(v) for k, v in seen.items()}
    assert {str(r) for r in seen[f"http://viewer:***@127.0.0.1:{port}/cam"]} == {"[[0, 0, 64, 64]]"}
    assert {str(r) for r in seen[str(VTEST)]} == {"[[100, 100, 64, 64]]"}
    assert {str(r) for r in seen[f"{VTEST}#2"]} == {"[[0, 0, 32, 32], [32, 32, 32, 32]]"}


def test_an_roi_one_source_cannot_hold_skips_that_source_and_the_others_go_on(tiny_bundle, tmp_path):
    """vtest.avi beside baboon.jpg, an ROI partly outside baboon's 512 x 512 frame: baboon is skipped
    with an error status event (the ROI is not clipped), vtest.avi streams, exit 0. The whole run
    stopped at baboon's first frame with exit 1."""
    out = tmp_path / "out.jsonl"
    p = pixlm_run(
        *(str(VTEST), str(BABOON), "--bundle", str(tiny_bundle), "--roi", "450,0,100,100"),
        *("--max-frames", "20", "--jsonl", str(out), "-q"),
    )
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert (
        f"[error] {BABOON}: region [450, 0, 100, 100] lies outside the 512x512 frame: source skipped"
        in stderr
    )
    records = read_jsonl(out)
    results = [r for r in records if r["type"] == "result"]
    assert len(results) == 20 and {r["source"] for r in results} == {str(VTEST)}
    assert {tuple(r["region"]["xywh"]) for r in results} == {(450, 0, 100, 100)}
    skipped = [r for r in records if r["type"] == "status" and r["status"] == "error"]
    assert [r["source"] for r in skipped] == [str(BABOON)] and "source skipped" in skipped[0]["message"]

    # A grid whose tiles are smaller than the model's 28 x 28 input in one source only: the same.
    p = pixlm_run(
        str(VTEST), str(BABOON), "--bundle", str(tiny_bundle), "--grid", "20x20", "--max-frames", "2"
    )
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert f"[error] {BABOON}: grid 20x20 cuts the 512x512 frame into 25x25-pixel tiles" in stderr
    assert stdout.count(f"{VTEST}#") == 2 and str(BABOON) + "#" not in stdout

    # The only source skipped: no source delivered, exit 1 with one Error line after its reason.
    p = pixlm_run(str(BABOON), "--bundle", str(tiny_bundle), "--roi", "450,0,100,100", "-q")
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 1 and "lies outside the 512x512 frame" in stderr, stderr
    assert stderr.splitlines()[-1].startswith("Error: no source delivered a frame"), stderr
