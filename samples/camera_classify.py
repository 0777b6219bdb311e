"""Recognize what a camera (or clip, or RTSP stream) shows, frame by frame: the jetson-inference loop.

python samples/camera_classify.py /usr/share/doc/opencv-doc/examples/data/vtest.avi [out.mp4] [BUNDLE]
python samples/camera_classify.py rtsp://127.0.0.1:8554/test

A region the model was not trained on is labelled "unknown" (the bundle's open-set gate).
"""

import sys

import cv2

from pixlm import Recognizer
from pixlm.runtime.sources import open_source

uri = sys.argv[1] if len(sys.argv) > 1 else "0"
out = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
bundle = sys.argv[3] if len(sys.argv) > 3 else None  # default: the shipped model's bundle

rec = Recognizer.open(bundle)  # best backend available
writer = None
with open_source(uri) as source:
    for frame in source:  # until the file ends or the camera gives up
        result = rec.predict(frame.image)
        print(f"#{frame.index}: {result.label} {result.score:.2f}  anomaly {result.anomaly:.3f} bits/px")
        if out:
            image = frame.image.copy()
            text = f"{result.label} {result.score:.2f}"
            cv2.putText(image, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
            if writer is None:
                h, w = image.shape[:2]
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
            writer.write(image)
if writer is not None:
    writer.release()
