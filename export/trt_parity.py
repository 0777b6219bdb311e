"""ONNX Runtime vs TensorRT on one bundle, on real images: run this on the device with TensorRT.

    python -m pixlm.export.trt_parity build/jetson --engine tensorrt-int8 --images 64

Needs TensorRT 10.x and Polygraphy (``pip install polygraphy``; JetPack ships TensorRT). Feeds
the same tokenized Fashion-MNIST test images (or ``--data``) to ONNX Runtime, on the ONNX file the
engine was built from, and to the engine through Polygraphy's ``TrtRunner``, once per profile:

    prefill   BOS + the whole image, empty cache
    decode    the last image token on the cache of everything before it (ONNX Runtime's presents)
    extend    the second half of the image on the cache of its first half (prefix reuse)

then compares with Polygraphy's ``Comparator``: logits within ``--atol``/``--rtol`` and, where the
call ends at the image's end, the label argmax. Exits 1 when any profile disagrees.
"""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle, BundleError
from pixlm.runtime.io_spec import LOGITS, TRT_PROFILES, DecoderIO, with_bos


def feeds(
    bundle: Bundle, images: np.ndarray, batch: int, profile: str = "prefill", engine=None
) -> list[dict]:
    """Engine inputs for ``profile`` from real images; ``engine`` (an OrtEngine on the engine's
    source ONNX file) computes the caches the decode and extend feeds start from."""
    tok, spec = bundle.tokenizer, DecoderIO.from_config(bundle.model_config)
    seqs = with_bos(tok.bos, tok.encode_prepared(images))
    split = spec.profile_split(profile)
    out = []
    for i in range(0, len(seqs), batch):
        ids = seqs[i : i + batch]
        past = None if split == 0 else engine.prefill(ids[:, :split])[1]
        out.append(spec.step_feed(np.ascontiguousarray(ids[:, split:]), past))
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
    from pixlm.runtime.engine import OrtEngine

    source = bundle.root / meta["source_onnx"]
    ort_engine = OrtEngine(source)
    first = bundle.vocabulary["first_label"]
    ok = True
    for index, profile in enumerate(TRT_PROFILES[: len(meta["profiles"])]):
        runners = [
            OnnxrtRunner(SessionFromOnnx(str(source))),
            TrtRunner(EngineFromBytes(BytesFromPath(str(bundle.path(key)))), optimization_profile=index),
        ]
        loader = feeds(bundle, test.images, batch, profile, ort_engine)
        results = Comparator.run(runners, data_loader=loader)
        close = bool(
            Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=atol, rtol=rtol))
        )
        agree = total = 0
        (_, ort_runs), (_, trt_runs) = results.items()
        for a, b in zip(ort_runs, trt_runs, strict=True):
            la, lb = a[LOGITS][:, -1, first:].argmax(-1), b[LOGITS][:, -1, first:].argmax(-1)
            agree, total = agree + int((la == lb).sum()), total + len(la)
        click.echo(
            f"{key} {profile}: logits within atol {atol} rtol {rtol}: {close}; "
            f"label argmax agrees {agree}/{total}"
        )
        ok = ok and close and agree == total
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
