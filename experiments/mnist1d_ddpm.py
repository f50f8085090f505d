"""An unconditional 1-D denoising diffusion model on MNIST-1D signals (length 40).

  python -m train --config experiments/mnist1d_cnn.py --workdir runs/mnist1d_cnn
  python -m train --config experiments/mnist1d_ddpm.py --workdir runs/mnist1d_ddpm
  python -m eval.generative --workdir runs/mnist1d_ddpm
"""

from experiments.recipes import diffusion

ARGS = diffusion.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  return diffusion.finish(diffusion.mnist1d(), "mnist1d_ddpm", arg)
