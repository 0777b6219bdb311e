# pixlm: `make demo` sets everything up and runs the shipped model; `make test` runs the tests.
# Both work on a fresh Debian machine as root: Debian packages (data, sample media, GStreamer's
# RTSP server for the camera tests) and a virtual environment in .venv are installed on demand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := dataset-fashion-mnist opencv-doc ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav \
	mosquitto chromium

.PHONY: setup system demo test lint format clean soak frontier

setup: system $(VENV)/.installed

system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

VTEST := /usr/share/doc/opencv-doc/examples/data/vtest.avi
DEFAULT_BUNDLE = $$($(BIN)/python -c 'from pixlm.runtime.defaults import default_bundle_dir as d; print(d())')

SCENE_BUNDLE := build/vtest-scene
MOTION_BUNDLE := build/vtest-motion
DEMO_OUT := out

# The story of the shipped models, in pictures, under out/ (about 4 min on 2 idle cores). First
# their bundles: the Fashion-MNIST model's (ONNX fp32 + INT8, validated, gated and its open-set
# gate fitted on the calibration split, never on the images the demo reports on) and the scene
# model's, learned from vtest.avi's first 50% without labels, its alert thresholds calibrated on
# 50-60%. Then `pixlm demo`: a contact sheet and a conveyor clip streamed with `pixlm run --roi`;
# bags left in the clip's held-out 40%, streamed through the scene model in its 6x8 grid (alerts,
# heat-map video, a timeline against the truth, snapshots); a walker running in the same frames,
# streamed through the motion model (learned from how the first 50% moves); street regions the
# Fashion-MNIST model calls "unknown"; image completion; out/summary.txt.
demo: setup
	$(BIN)/pixlm-export -o "$(DEFAULT_BUNDLE)" --force
	$(BIN)/pixlm-export sdk/models/vtest-scene.pt --data $(VTEST) --no-int8 --no-dynamic \
		--eval-images 64 -o $(SCENE_BUNDLE) --force
	$(BIN)/pixlm-export sdk/models/vtest-motion.pt --data $(VTEST) --no-int8 --no-dynamic \
		--eval-images 64 -o $(MOTION_BUNDLE) --force
	$(BIN)/pixlm demo --bundle "$(DEFAULT_BUNDLE)" --scene-bundle $(SCENE_BUNDLE) \
		--motion-bundle $(MOTION_BUNDLE) --video $(VTEST) --out $(DEMO_OUT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The runtime tests run in their own process with `import torch` blocked.
test: lint
	$(BIN)/pytest -q tests/runtime
	$(BIN)/pytest -q tests --ignore=tests/runtime

# 30 minutes: 3 RTSP cameras (killed in turn) + 2 looping files; figures to docs/figures/soak.*
soak: setup
	$(BIN)/python benchmarks/soak.py --minutes 30

# The accuracy-cost frontier: every ONNX file of the shipped and the small Fashion-MNIST model
# against a small CNN trained to convergence (60 cosine epochs on images 0-54,999, the epoch kept
# on 55,000-59,999; kept in build/frontier/cnn-anchor.pt), all scored on the 10,000 test images and
# timed engine-only and end to end in the same run; the table is printed, figures go to
# docs/figures/frontier.* (about 10 min on 2 cores; about an hour more the first time, to train the CNN).
FRONTIER := build/frontier
frontier: setup
	$(BIN)/pixlm-export -o $(FRONTIER)/fashion-mnist --force
	$(BIN)/pixlm-export sdk/models/fashion-mnist-small.pt -o $(FRONTIER)/fashion-mnist-small --force
	$(BIN)/python benchmarks/frontier.py $(FRONTIER)/fashion-mnist $(FRONTIER)/fashion-mnist-small \
		--cnn $(FRONTIER)/cnn-anchor.pt --json docs/figures/frontier.json --plot docs/figures/frontier.png

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
