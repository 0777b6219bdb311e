"""Image completion: keep the top rows of a Fashion-MNIST test image, let the model draw the rest.

    python samples/complete_image.py [INDEX] [KNOWN_ROWS] [out.png] [BUNDLE]

Writes original | tokenized | completions side by side, 4x enlarged.
"""

import sys

import cv2
import numpy as np

from pixlm import Recognizer
from pixlm.data import load_fashion_mnist

index = int(sys.argv[1]) if len(sys.argv) > 1 else 0
known_rows = int(sys.argv[2]) if len(sys.argv) > 2 else 3
out = sys.argv[3] if len(sys.argv) > 3 else "completion.png"
bundle = sys.argv[4] if len(sys.argv) > 4 else None  # default: the shipped model's bundle

rec = Recognizer.open(bundle, precision="fp32")
test = load_fashion_mnist(split="test")
image, label = test.images[index], rec.labels[test.labels[index]]
tokenized = rec.tokenizer.decode(rec.tokenizer.encode(image))
completions = [rec.complete(image, known_rows, temperature=1.0, seed=s) for s in range(4)]
strip = np.concatenate([image, tokenized, *completions], axis=1)
cv2.imwrite(out, cv2.resize(strip, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST))
print(f"image {index} ({label}): kept {known_rows} token rows,")
print(f"sampled the rest 4 times with the KV cache -> {out}")
