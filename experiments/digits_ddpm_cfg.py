"""A class-conditional diffusion model on scikit-learn's digits with classifier-free guidance:
labels are dropped to the null class 10% of the time in training, and samples are guided with
scale 2 (`--config.diffusion.guidance_scale`).

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_ddpm_cfg.py --workdir runs/digits_ddpm_cfg
  python -m eval.generative --workdir runs/digits_ddpm_cfg
"""

from experiments.recipes import diffusion

ARGS = diffusion.ARGS  # the arguments of get_config (besides none)


def get_config(arg: str | None = None):
  c = diffusion.digits(num_classes=10)
  c.diffusion.label_dropout = 0.1
  c.diffusion.guidance_scale = 2.0
  return diffusion.finish(c, "digits_ddpm_cfg", arg)
