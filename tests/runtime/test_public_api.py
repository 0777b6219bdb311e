"""The public names: ``from pixlm import Recognizer`` works on a camera box (no torch), and
``import pixlm`` stays light: the runtime loads on first access to its classes, not before."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_recognizer_and_streamer_from_the_package_root_without_torch():
    import pixlm
    import pixlm.runtime
    from pixlm import Recognizer, Streamer
    from pixlm.runtime import Recognizer as RuntimeRecognizer
    from pixlm.runtime import Streamer as RuntimeStreamer
    from pixlm.runtime.recognizer import Recognizer as DefiningRecognizer
    from pixlm.runtime.stream import Streamer as DefiningStreamer

    assert Recognizer is RuntimeRecognizer is DefiningRecognizer
    assert Streamer is RuntimeStreamer is DefiningStreamer
    assert {"Recognizer", "Streamer"} <= set(pixlm.__all__) & set(pixlm.runtime.__all__)
    assert {"Recognizer", "Streamer"} <= set(dir(pixlm)) & set(dir(pixlm.runtime))
    assert "torch" not in sys.modules
    with pytest.raises(AttributeError, match="no attribute 'Recogniser'"):
        pixlm.Recogniser  # noqa: B018
    with pytest.raises(ImportError):
        from pixlm.runtime import Recogniser  # noqa: F401


# Each in a fresh interpreter: what a bare import loads, then what the first access loads.
LAZY = """
import sys
import {package}
assert not {eager!r} & set(sys.modules), {eager!r} & set(sys.modules)
{package}.Recognizer
assert "pixlm.runtime.recognizer" in sys.modules and "torch" not in sys.modules
"""


@pytest.mark.parametrize(
    "package, eager",
    [
        ("pixlm", {"cv2", "onnxruntime", "torch", "pixlm.runtime", "pixlm.runtime.recognizer"}),
        ("pixlm.runtime", {"onnxruntime", "torch", "pixlm.runtime.recognizer", "pixlm.runtime.stream"}),
    ],
)
def test_import_loads_the_runtime_only_on_attribute_access(package, eager):
    code = LAZY.format(package=package, eager=eager)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(
    "name, home",
    [
        ("LN2", "pixlm.runtime.scoring"),
        ("UNKNOWN", "pixlm.runtime.scoring"),
        ("log_softmax", "pixlm.runtime.scoring"),
        ("softmax", "pixlm.runtime.scoring"),
        ("default_bundle_dir", "pixlm.runtime.defaults"),
    ],
)
def test_a_moved_name_still_imports_from_the_recognizer_with_a_deprecation_warning(name, home):
    import importlib

    import pixlm.runtime.recognizer as recognizer

    with pytest.warns(DeprecationWarning, match=f"recognizer.{name} moved to {home}.{name}"):
        value = getattr(recognizer, name)
    assert value is getattr(importlib.import_module(home), name)


def test_result_still_imports_from_the_recognizer_whose_predictions_it_types():
    from pixlm.runtime.recognizer import Result
    from pixlm.runtime.scoring import Result as Home

    assert Result is Home


@pytest.mark.parametrize(
    "name, home",
    [
        ("KINDS", "pixlm.runtime.records"),
        ("status_record", "pixlm.runtime.records"),
        ("source_slug", "pixlm.runtime.sources"),
        ("SourceEvent", "pixlm.runtime.sources"),
    ],
)
def test_a_moved_name_still_imports_from_the_events_module_with_a_deprecation_warning(name, home):
    import importlib

    import pixlm.runtime.outputs.events as events

    with pytest.warns(DeprecationWarning, match=f"events.{name} moved to {home}.{name}"):
        value = getattr(events, name)
    assert value is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError, match="no attribute 'status_records'"):
        events.status_records  # noqa: B018
