"""An unconditional denoising diffusion model on scikit-learn's digits (8x8); samples by DDIM with
50 steps (add `--config.diffusion.sampler=ddpm` for ancestral sampling through all 1,000).

The shared recipe (`diffusion.py`) with v prediction, the min-SNR loss weighting (gamma 5) and
20,000 steps instead of eps, the simple loss and 5,000: on digits, that took DDIM-50 from 44%
above DDPM-1000's Frechet distance to the figures in the README ("Diffusion models"). DDIM's eta
is 0.5, chosen on seeds 10-12 as for the others (Frechet distance 2.62 at 0.5; 3.09 at 0, 2.96
at 0.25, 3.42 at 0.75, 4.61 at 1).

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_ddpm.py --workdir runs/digits_ddpm
  python -m eval.generative --workdir runs/digits_ddpm
"""

from experiments.recipes import diffusion

ARGS = diffusion.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  # the attention on the compiled CPU kernel (arch/cpu_attention.py; docs/cpu_attention.md): the
  # same Frechet distance within its seed spread (docs/results/generative.md). The convolutions by
  # oneDNN (arch/cpu_conv.py): steps 1.2-1.3x faster; with them, the GroupNorm and dense-layer
  # kernels (docs/cpu_layers.md) 1.00-1.19x more, and the first compile 5.7 -> 3.3 s
  # (docs/cpu_conv.md)
  c = diffusion.digits(steps=20000, attention_kernel="cpu", norm_kernel="cpu", dense_kernel="cpu",
                       conv_kernel="onednn")
  c.diffusion.prediction = "v"
  c.diffusion.weighting = "min_snr"
  c.diffusion.eta = 0.5
  c.train.huge_pages = True  # the UNet's steps 21% faster (train/huge_pages.py)
  # the AdamW update, clipping, EMA and logged norms as one compiled call (train/cpu_optimizer.py):
  # the first compile 11.6 -> 5.7 s, steps no slower (docs/cpu_optimizer.md)
  c.optim.kernel = "cpu"
  return diffusion.finish(c, "digits_ddpm", arg)
