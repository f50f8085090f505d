"""One restore path for every evaluation tool: a trained workdir as its config, model, paradigm
and train state, with predictions through the paradigm's own `predict`.

    run = restore.restore("runs/mnist1d_cnn", overrides={"report.bins": "10"})
    logits = run.predict(x)                # (N, num_classes), in chunks of one jitted call
    x, labels, stats = run.split("test")   # the split as the run's evaluation pipeline serves it

The code is `train/restored.py`, where training reads trained runs too (the generator of
`data.synthetic`); the evaluation tools name it here.
"""

from train.restored import Restored, restore

__all__ = ["Restored", "restore"]
