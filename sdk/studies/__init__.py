"""Studies: what learning without labels buys, measured against baselines (``pixlm study NAME``).

One module per study; each trains what it needs, scores it, writes ``NAME.json`` and PNG figures
into an output folder, and has a ``quick`` mode that finishes in minutes (smoke-tested by
``make test``). The full runs' numbers and figures live in ``docs/figures/`` and ``docs/studies.md``.

    one_class   one-class anomaly detection on Fashion-MNIST (AUROC per class, mean)
    ood         the shipped model's open-set gate: "unknown" for digits, street crops, noise
    scene       a static camera's scene learned from video; pasted objects found (vs MOG2)
    alerts      left objects alerted within 3 s, false alerts a minute (vs MOG2, dual background)
    few_labels  pretrain without labels, fine-tune on 10 / 100 labels per class (vs a CNN)
"""
