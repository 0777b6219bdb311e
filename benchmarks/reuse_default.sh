#!/bin/bash
# Prefix reuse default vs --no-prefix-reuse, --prefix-reuse, --batch 8: in pixlm run itself, whole
# processes A and B in turn (farm-bench). Pause background trainings first (kill -STOP PID).
# Run from the repository root: bash benchmarks/reuse_default.sh

export PATH=$PWD/.venv/bin:$PATH
V=/usr/share/doc/opencv-doc/examples/data/vtest.avi
S=build/vtest-static.avi  # written by pixlm bench (runtime/bench.py write_static_clip)
[ -f "$S" ] || python -c "from pathlib import Path; from pixlm.runtime.bench import write_static_clip as w; w(Path(\"$S\"))"
one="pixlm run $V --grid 2x2 --max-frames 400 -q"
four="pixlm run $V $V $V $V --grid 2x2 --max-frames 1600 -q"
static="pixlm run $S --grid 2x2 --max-frames 400 -q"
b() { echo "### $1"; shift; farm-bench -n 5 --timeout 900 "$@" 2>&1 | grep -v '^$'; }
b "1 source: default vs --no-prefix-reuse" --vs "$one --no-prefix-reuse" -- $one
b "4 sources: default vs --no-prefix-reuse" --vs "$four --no-prefix-reuse" -- $four
b "1 source: --prefix-reuse vs default" --vs "$one" -- $one --prefix-reuse
b "static: --prefix-reuse vs default" --vs "$static" -- $static --prefix-reuse
b "1 source: --batch 8 vs default (16)" --vs "$one" -- $one --batch 8
b "4 sources: --batch 8 vs default (16)" --vs "$four" -- $four --batch 8
