"""A convolutional VAE with an 8-dimensional latent on scikit-learn's digits, binarised (pixel
>= 8 of 16) for a Bernoulli likelihood; the KL weight warms up over the first 1,000 steps. Reports
the test negative ELBO and the importance-weighted bound (IWAE, k = 1,000) in nats per image.

  python -m train --config experiments/digits_vae.py --workdir runs/digits_vae
  python -m train --config experiments/digits_vae.py:tiny
"""

from experiments.recipes import autoencoder

ARGS = autoencoder.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = autoencoder.digits("VAE", likelihood="bernoulli")
  c.data.binarize = True
  c.reconstruction.kl_warmup_steps = 1000
  c.reconstruction.eval_samples = 100
  c.reconstruction.iwae_samples = 1000
  return autoencoder.finish(c, "digits_vae", arg)
