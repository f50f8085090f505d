"""Generation with the decoding cache: equal to recomputing full forward passes; clear errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from tests.conftest import ROOT
from train import generate

MODELS = {
    "transformer": {"name": "transformer.TransformerLM", "vocab_size": 128, "width": 16,
                    "depth": 2, "num_heads": 2, "mlp_dim": 32, "max_len": 24,
                    "positions": "rotary"},
    "lstm": {"name": "recurrent.RecurrentNet", "num_classes": 128, "vocab_size": 128,
             "embed_dim": 8, "hidden": (16,), "cell": "lstm", "head": "sequence"},
}


# The Transformer's case (14 s) runs with the slow checks: the default suite's budget.
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "transformer"
                                  else k for k in sorted(MODELS)])
def test_greedy_cached_generation_equals_full_forward_recomputation(kind):
  model = arch.build(MODELS[kind])
  prompt = jnp.asarray(generate.encode("def f(x):", 128))[None]
  params = model.init(jax.random.key(0), prompt)["params"]
  # Sharpen the head so greedy choices are not decided by float rounding.
  params = dict(params)
  params["head"] = dict(params["head"])
  params["head"]["kernel"] = params["head"]["kernel"] * 20
  new = generate.generate(model, params, prompt, 10, temperature=0.0)
  # Causal models: the logits at t of a zero-padded sequence are those of its first t+1 tokens,
  # so one compiled full forward pass serves every step of the recomputation.
  full = jax.jit(lambda p, t: model.apply({"params": p}, t))
  p_len = prompt.shape[1]
  tokens = np.zeros((1, p_len + 10), np.int32)
  tokens[:, :p_len] = prompt
  for t in range(p_len, p_len + 10):
    tokens[:, t] = np.argmax(np.asarray(full(params, jnp.asarray(tokens)))[:, t - 1], -1)
  np.testing.assert_array_equal(np.asarray(new), tokens[:, p_len:])
  # top_k=1 at any temperature is greedy; sampling is reproducible for a seed.
  np.testing.assert_array_equal(generate.generate(model, params, prompt, 10, temperature=2.0,
                                                  top_k=1), new)
  a = generate.generate(model, params, prompt, 10, rng=jax.random.key(5))
  b = generate.generate(model, params, prompt, 10, rng=jax.random.key(5))
  np.testing.assert_array_equal(a, b)


def test_sample_logits_respects_top_k():
  logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]]))
  draws = jax.vmap(lambda k: generate.sample_logits(k, logits, 1.0, 2))(
      jax.random.split(jax.random.key(0), 2000))
  counts = np.bincount(np.asarray(draws).ravel(), minlength=4)
  assert counts[0] == counts[1] == 0
  assert abs(counts[3] / counts[2:].sum() - 0.4 / 0.7) < 0.04


def test_bad_prompts_and_lengths_are_clear_errors():
  with pytest.raises(generate.GenerationError, match=r"byte 0xc3 \(in 'é', character 1\) is "
                     r"outside the model's vocabulary of 128 byte values"):
    generate.encode("déf", 128)
  with pytest.raises(generate.GenerationError, match="--prompt is empty"):
    generate.encode("", 128)
  model = arch.build(MODELS["transformer"])
  prompt = jnp.zeros((1, 20), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), prompt))["params"]
  with pytest.raises(generate.GenerationError, match="20 tokens plus --length=5 is 25 tokens, "
                     "longer than the model's max_len=24"):
    generate.generate(model, params, prompt, 5)


@pytest.mark.slow
def test_cli_samples_from_a_trained_workdir(trained, tmp_path):
  workdir = trained("charlm_transformer")
  cmd = [sys.executable, "-m", "train.generate", "--workdir", workdir, "--prompt",
         "The ", "--length", "8", "--temperature", "0.8", "--top_k", "5"]
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("The ") and len(r.stdout.rstrip("\n")) == 12
  r = subprocess.run(cmd[:-6] + ["--prompt", "naïve"], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, check=False)
  assert r.returncode == 1 and "outside the model's vocabulary" in r.stderr
  r = subprocess.run(cmd[:4] + [str(tmp_path / "nothing"), "--prompt", "a"], cwd=ROOT,
                     capture_output=True, text=True, timeout=300, check=False)
  assert r.returncode == 2 and "holds no config.json" in r.stderr
