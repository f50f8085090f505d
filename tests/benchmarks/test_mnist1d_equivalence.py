"""benchmarks/mnist1d_equivalence.py: the paper's PyTorch CNN and GRU and ours, started from the
same weights, agree in float64 through a few Adam steps. Needs the `bench` extra (torch)."""

import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from tests.conftest import FROZEN_MNIST1D as DATA  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


@pytest.mark.parametrize("model", ["cnn", "gru"])
def test_same_weights_give_the_same_training_in_float64(model, tmp_path):
  out = str(tmp_path / "torch.npz")
  cmd = [sys.executable, "-m", "benchmarks.mnist1d_equivalence", "--model",
         model, "--data", DATA, "--out", out, "--steps", "5"]
  for side in ("torch", "jax"):
    r = subprocess.run(cmd + ["--side", side], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
  diffs = {k: float(v) for k, v in re.findall(r"^(\w[\w ]*?): max \|difference\| (\S+)$",
                                               r.stdout, re.M)}
  assert set(diffs) == {"initial logits", "initial gradients",
                        "weights after 5 Adam steps"}, r.stdout
  assert max(diffs.values()) < 1e-12, diffs
