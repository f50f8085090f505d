"""A 1-D convolutional VAE with an 8-dimensional latent on MNIST-1D (signals normalised with the
training mean and standard deviation), with a Gaussian likelihood whose per-position standard
deviation is learned. Reports the test negative ELBO and IWAE bound (k = 1,000) in nats per
signal (a density in normalised units).

  python -m train --config experiments/mnist1d_vae.py --workdir runs/mnist1d_vae
  python -m train --config experiments/mnist1d_vae.py:tiny
"""

from experiments.recipes import autoencoder

ARGS = autoencoder.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = autoencoder.mnist1d("VAE", likelihood="gaussian")
  c.reconstruction.kl_warmup_steps = 1000
  c.reconstruction.eval_samples = 100
  c.reconstruction.iwae_samples = 1000
  return autoencoder.finish(c, "mnist1d_vae", arg)
