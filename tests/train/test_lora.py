"""LoRA (train/lora.py): the merged kernel is W + alpha / rank A @ B against NumPy for a Dense,
an attention query (D, heads, width) and output (heads, width, D) kernel; a fine-tuning step of a
decoder LM with adapters starts at the base model's loss exactly (B = 0), moves only the
adapters (every base parameter bit-identical), and keeps optimizer state for the adapters alone
(its bytes against full fine-tuning's); the config's LoRA fields are checked in one line."""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

import arch
from train import config as config_lib
from train import config_validate, lora
from train.errors import ConfigError
from train.paradigms import supervised

MODEL = {"name": "transformer.Llama", "vocab_size": 32, "width": 32, "depth": 2, "num_heads": 4,
         "num_kv_heads": 2, "mlp_dim": 64, "max_len": 16}


def test_merged_is_w_plus_scaled_a_b():
  rng = np.random.default_rng(0)
  params = {"mlp_in": {"kernel": rng.normal(size=(6, 10)).astype(np.float32)},
            "attn": {"query": {"kernel": rng.normal(size=(6, 2, 3)).astype(np.float32)},
                     "out": {"kernel": rng.normal(size=(2, 3, 6)).astype(np.float32)}}}
  config = mlc.ConfigDict({"rank": 2, "alpha": 3.0, "targets": ("kernel$",)})
  with_adapters = lora.init(params, config, jax.random.key(0))
  adapters = with_adapters["lora"]
  assert adapters["attn|query|kernel"]["a"].shape == (6, 2)    # fan-in: D
  assert adapters["attn|out|kernel"]["a"].shape == (6, 2)      # fan-in: heads x width
  for ab in adapters.values():
    ab["b"] = jnp.asarray(rng.normal(size=ab["b"].shape), jnp.float32)
  got = lora.merged(with_adapters, config)
  assert "lora" not in got
  for name, w in (("mlp_in|kernel", params["mlp_in"]["kernel"]),
                  ("attn|query|kernel", params["attn"]["query"]["kernel"]),
                  ("attn|out|kernel", params["attn"]["out"]["kernel"])):
    a, b = (np.asarray(adapters[name][k], np.float64) for k in ("a", "b"))
    want = w + 1.5 * (a @ b).reshape(w.shape)
    node = got
    for key in name.split("|"):
      node = node[key]
    np.testing.assert_allclose(node, want, rtol=1e-5, atol=1e-5)


def _state_and_step(rank: int):
  c = config_lib.base()
  c.model = MODEL
  c.optim.name = "adam"
  c.optim.lora.rank = rank
  model = arch.build(MODEL)
  p = supervised.make(model, c, total_steps=10)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 32, (4, 16))
  batch = {"inputs": tokens, "label": np.roll(tokens, -1, 1), "mask": np.ones((4, 16), np.float32)}
  state = p.init(jax.random.key(0), batch)
  return p, state, batch


def _bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def test_a_lora_step_moves_only_the_adapters_and_keeps_their_state_alone():
  full, full_state, batch = _state_and_step(0)
  p, state, _ = _state_and_step(4)
  assert set(state.params) == set(full_state.params) | {"lora"}
  assert len(state.params["lora"]) == 8  # q, k, v, out in each of 2 blocks
  _, loss_full = jax.jit(full.train_step)(full_state, batch, jax.random.key(1))
  new, loss = jax.jit(p.train_step)(state, batch, jax.random.key(1))
  np.testing.assert_allclose(loss["loss"], loss_full["loss"], rtol=1e-6)  # B = 0: the base model
  for (path, before), after in zip(
      jax.tree_util.tree_flatten_with_path({k: v for k, v in state.params.items()
                                            if k != "lora"})[0],
      jax.tree.leaves({k: v for k, v in new.params.items() if k != "lora"})):
    np.testing.assert_array_equal(after, before, err_msg=str(path))
  assert all(not np.array_equal(new.params["lora"][k]["b"], state.params["lora"][k]["b"])
             for k in state.params["lora"])
  # Adam's two moments for the adapters only: far less than full fine-tuning's
  adapters = _bytes(state.params["lora"])
  assert _bytes(state.opt_state) <= 2 * adapters + 64
  assert _bytes(full_state.opt_state) >= 2 * _bytes(full_state.params)
  assert _bytes(state.opt_state) < _bytes(full_state.opt_state) / 4


@pytest.mark.parametrize("fields,message", [
    (dict(rank=-1), "optim.lora.rank=-1; expected an int >= 0"),
    (dict(rank=4, alpha=0.0), "optim.lora.alpha=0.0"),
    (dict(rank=4, targets=("(",)), "optim.lora.targets pattern '('"),
])
def test_lora_fields_are_checked_in_one_line(fields, message):
  c = config_lib.base()
  for k, v in fields.items():
    c.optim.lora[k] = v
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    config_validate._check_lora(c)
  c = config_lib.base("diffusion")
  c.optim.lora.rank = 2
  with pytest.raises(ConfigError, match="LoRA adapts the supervised paradigm"):
    config_validate._check_lora(c)
