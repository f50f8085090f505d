import math
import subprocess
import sys

import numpy as np
import pytest

from eval import lm
from tests.conftest import ROOT


def test_bigram_bits_equal_a_hand_computation():
  train = np.array([0, 1, 0, 1, 1, 2], np.uint8)
  counts = lm.bigram_counts(train, 3)
  np.testing.assert_array_equal(counts, [[0, 2, 0], [1, 1, 1], [0, 0, 0]])
  held = np.array([0, 1, 2], np.uint8)
  # P(1|0) = (2 + .5) / (2 + 1.5); P(2|1) = (1 + .5) / (3 + 1.5)
  expected = -(math.log2(2.5 / 3.5) + math.log2(1.5 / 4.5)) / 2
  assert lm.bigram_bits(counts, held, 0.5) == pytest.approx(expected, rel=1e-12)
  # Alpha is chosen on the validation stream: a stream that repeats the training bigrams
  # prefers little smoothing, one full of unseen bigrams prefers more.
  _, small = lm.fit_bigram(train, np.array([0, 1, 0, 1]), 3)
  _, large = lm.fit_bigram(train, np.array([2, 2, 0, 0, 2, 1]), 3)
  assert small < large


@pytest.mark.slow
def test_workdir_bits_equal_the_loops_final_eval_and_the_cli_table(trained):
  import json
  import os

  workdir = trained("charlm_transformer")
  metrics, step, params = lm.workdir_metrics(workdir, "validation")
  with open(os.path.join(workdir, "summary.json")) as f:
    final = json.load(f)["final_eval"]
  assert step == 20 and params > 0
  assert metrics["bits_per_token"] == pytest.approx(final["bits_per_token"], rel=1e-6)
  assert metrics["bits_per_token"] == pytest.approx(final["loss"] / math.log(2), rel=1e-6)
  r = subprocess.run([sys.executable, "-m", "eval.lm", "--workdir", workdir, "--split", "test"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert r.returncode == 0, r.stderr
  assert "| bigram, add-" in r.stdout and f"| {workdir} | 20 |" in r.stdout
