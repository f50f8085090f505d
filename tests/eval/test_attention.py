import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from eval import attention_maps
from tests.conftest import ROOT


def test_attention_maps_come_in_layer_order_and_are_causal_for_the_lm():
  model = arch.build({"name": "transformer.TransformerLM", "vocab_size": 16, "width": 8,
                      "depth": 3, "num_heads": 2, "mlp_dim": 8, "max_len": 12})
  tokens = jnp.arange(12)[None] % 16
  params = model.init(jax.random.key(0), tokens)["params"]
  _, maps = attention_maps.attention_maps(model, params, tokens)
  assert len(maps) == 3 and maps[0].shape == (1, 2, 12, 12)
  for w in maps:
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(w[..., np.triu_indices(12, 1)[0], np.triu_indices(12, 1)[1]] == 0)


def _run(args):
  return subprocess.run([sys.executable, "-m", "eval.attention", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_writes_pngs_for_a_classifier_and_a_language_model(trained, tmp_path):
  out = tmp_path / "clf.png"
  r = _run(["--workdir", trained("mnist1d_transformer"), "--index", "3", "--out", str(out)])
  assert r.returncode == 0, r.stderr
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(out) > 10_000
  out = tmp_path / "lm.png"
  r = _run(["--workdir", trained("charlm_transformer"), "--prompt", "def f(x):", "--out",
            str(out)])
  assert r.returncode == 0, r.stderr
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  r = _run(["--workdir", trained("charlm_transformer"), "--prompt", "x" * 17, "--out",
            str(out)])
  assert r.returncode == 1 and "longer than the model's max_len=16" in r.stderr
