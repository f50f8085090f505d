"""Anomaly detection on scikit-learn's digits: a convolutional VAE (8-dimensional latent,
Gaussian decoder with a learned per-pixel standard deviation, pixels scaled to [0, 1]) trained on
digits 0-8 only. `python -m eval.reconstruction --workdir runs/digits_anomaly` then scores every
test image (the unseen 9s included) by its negative ELBO and by its reconstruction error, and
reports the ROC AUC of finding the 9s beside PCA's reconstruction error (8 components fitted on
the same training images).

  python -m train --config experiments/digits_anomaly.py --workdir runs/digits_anomaly
  python -m train --config experiments/digits_anomaly.py:tiny
"""

from experiments.recipes import autoencoder

ARGS = autoencoder.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = autoencoder.digits("VAE", likelihood="gaussian")
  c.data.keep_classes = tuple(range(9))
  c.data.eval_batch_size = 324                      # the test split's 0-8 in one batch
  c.reconstruction.kl_warmup_steps = 1000
  c.reconstruction.eval_samples = 100
  c.reconstruction.iwae_samples = 1000
  return autoencoder.finish(c, "digits_anomaly", arg)
