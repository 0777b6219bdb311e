"""ONNX Runtime vs TensorRT on one bundle, on real images: run this on the device with TensorRT.

    python -m pixlm.export.trt_parity build/jetson --engine tensorrt-int8 --images 64

Needs TensorRT 10.x and Polygraphy (``pip install polygraphy``; JetPack ships TensorRT). Feeds
the same tokenized Fashion-MNIST test images (or ``--data``) to ONNX Runtime, on the ONNX file the
engine was built from, and to the engine through Polygraphy's ``TrtRunner`` (prefill profile),
then compares with Polygraphy's ``Comparator``: logits within ``--atol``/``--rtol`` and the label
argmax after the image. Exits 1 when they disagree.
"""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle, BundleError


def feeds(bundle: Bundle, images: np.ndarray, batch: int) -> list[dict]:
    tok, cfg = bundle.tokenizer, bundle.model_config
    hs = cfg["d_model"] // cfg["n_head"]
    tokens = tok.encode_prepared(images)
    seqs = np.concatenate([np.full((len(tokens), 1), tok.bos, dtype=np.int64), tokens], axis=1)
    out = []
    for i in range(0, len(seqs), batch):
        ids = seqs[i : i + batch]
        empty = np.zeros((len(ids), cfg["n_head"], 0, hs), dtype=np.float32)
        feed = {mf.INPUT_IDS: ids}
        for layer in range(cfg["n_layer"]):
            feed[mf.past_key(layer)] = feed[mf.past_value(layer)] = empty
        out.append(feed)
    return out


@click.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--engine", "key", default=None, help="Engine file key [default: the bundle's TensorRT pick].")
@click.option("--data", default="fashion-mnist", show_default=True)
@click.option("--images", type=int, default=64, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option(
    "--atol", type=float, default=0.05, show_default=True, help="INT8/FP16 engines differ a little."
)
@click.option("--rtol", type=float, default=0.05, show_default=True)
def main(bundle_dir, key, data, images, batch, atol, rtol) -> None:
    from pixlm.runtime.engine_trt import EngineMismatchError, TensorRTUnavailable, check_engine_metadata

    try:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.comparator import Comparator, CompareFunc
    except ImportError as e:
        raise click.ClickException(f"needs Polygraphy and TensorRT ({e}): pip install polygraphy") from e
    try:
        bundle = Bundle.load(bundle_dir)
        key = key or bundle.recommended("tensorrt")
        entry = bundle.files[key].entry
        meta = json.loads((bundle.root / entry[mf.F_METADATA][mf.F_PATH]).read_text())
        check_engine_metadata(meta, bundle.path(key))
        from pixlm.data import load_source  # numpy + OpenCV only

        tok = bundle.tokenizer
        test = load_source(data, "test", tok, tok.config.channels).subset(images)
    except (BundleError, EngineMismatchError, TensorRTUnavailable, ValueError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    source = bundle.root / meta["source_onnx"]
    runners = [
        OnnxrtRunner(SessionFromOnnx(str(source))),
        TrtRunner(EngineFromBytes(BytesFromPath(str(bundle.path(key)))), optimization_profile=0),
    ]
    results = Comparator.run(runners, data_loader=feeds(bundle, test.images, batch))
    close = bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=atol, rtol=rtol)))
    first = bundle.vocabulary["first_label"]
    agree = total = 0
    (_, ort_runs), (_, trt_runs) = results.items()
    for a, b in zip(ort_runs, trt_runs, strict=True):
        la, lb = a[mf.LOGITS][:, -1, first:].argmax(-1), b[mf.LOGITS][:, -1, first:].argmax(-1)
        agree, total = agree + int((la == lb).sum()), total + len(la)
    click.echo(f"{key}: logits within atol {atol} rtol {rtol}: {close}; label argmax agrees {agree}/{total}")
    sys.exit(0 if close and agree == total else 1)


if __name__ == "__main__":
    main()
