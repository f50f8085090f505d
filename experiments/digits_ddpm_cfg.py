"""A class-conditional diffusion model on scikit-learn's digits with classifier-free guidance:
labels are dropped to the null class 10% of the time in training, and samples are guided with
scale 2 (`--config.diffusion.guidance_scale`).

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_ddpm_cfg.py --workdir runs/digits_ddpm_cfg
  python -m eval.generative --workdir runs/digits_ddpm_cfg
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import _diffusion  # noqa: E402


def get_config(arg: str | None = None):
  c = _diffusion.digits(num_classes=10)
  c.diffusion.label_dropout = 0.1
  c.diffusion.guidance_scale = 2.0
  return _diffusion.finish(c, "digits_ddpm_cfg", arg)
