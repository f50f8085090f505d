"""An unconditional denoising diffusion model on scikit-learn's digits (8x8); samples by DDIM with
50 steps (add `--config.diffusion.sampler=ddpm` for ancestral sampling through all 1,000).

  python -m train --config experiments/digits_cnn.py --workdir runs/digits_cnn
  python -m train --config experiments/digits_ddpm.py --workdir runs/digits_ddpm
  python -m eval.generative --workdir runs/digits_ddpm
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import _diffusion  # noqa: E402


def get_config(arg: str | None = None):
  return _diffusion.finish(_diffusion.digits(), "digits_ddpm", arg)
