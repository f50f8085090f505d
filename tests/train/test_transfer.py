"""Transfer learning: optim.freeze holds parameters fixed; init_from copies a trained run's
parameters by path and shape into a new model, whose new head keeps its initialisation."""

import json
import os

import jax
import numpy as np
import pytest

import arch
from tests.conftest import load_experiment
from train import checkpoint, loop, optim, transfer
from train import config as config_lib
from train.paradigms import supervised


def test_frozen_parameters_do_not_move_and_the_rest_do():
  model = arch.build({"name": "mlp.MLP", "num_classes": 3, "widths": (8,)})
  c = config_lib.base()
  c.optim.name, c.optim.weight_decay, c.optim.clip_norm = "adamw", 0.1, 1.0
  c.optim.freeze = ("dense0",)
  p = supervised.make(model, c, total_steps=10)
  rng = np.random.default_rng(0)
  batch = {"inputs": rng.normal(size=(16, 5)).astype(np.float32),
           "label": rng.integers(0, 3, 16), "mask": np.ones(16, np.float32)}
  state = p.init(jax.random.key(0), batch)
  labels = optim.freeze_labels(state.params, ("dense0",))
  assert {optim.path_name(k): v for k, v in
          jax.tree_util.tree_flatten_with_path(labels)[0]} == {
      "dense0/bias": "frozen", "dense0/kernel": "frozen", "head/bias": "train",
      "head/kernel": "train"}
  new, _ = jax.jit(p.train_step)(state, batch, jax.random.key(1))
  for name in ("kernel", "bias"):
    np.testing.assert_array_equal(new.params["dense0"][name], state.params["dense0"][name])
    assert not np.allclose(new.params["head"][name], state.params["head"][name])
  c.optim.freeze = ("Conv",)
  with pytest.raises(config_lib.ConfigError, match="optim.freeze pattern 'Conv' matches no "
                     "parameter; the parameters are"):
    supervised.make(model, c, total_steps=10).init(jax.random.key(0), batch)


def test_init_from_copies_the_backbone_and_keeps_a_new_head(trained, data_dir, tmp_path):
  source = trained("mnist1d_cnn")
  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  c.data.keep_classes = (5, 6, 7, 8, 9)
  c.data.train_split = "train[:10%]"
  c.init_from.workdir = source
  c.init_from.include = ("^conv",)       # the convolutional backbone; the head starts afresh
  c.optim.freeze = ("^conv",)            # and stays fixed: a probe of the backbone's features
  wd = str(tmp_path / "probe")
  loop.train_and_evaluate(c, wd)
  copied = json.load(open(os.path.join(wd, "init_from.json")))
  assert copied["parameters"] and all(p.startswith("conv") for p in copied["parameters"])
  assert "head/kernel" in copied["kept_initialisation"]
  _, src_tree, _, _ = checkpoint.load_workdir(source)
  _, new_tree, _, _ = checkpoint.load_workdir(wd)
  for layer, leaves in new_tree["params"].items():
    for k, value in leaves.items():
      if layer.startswith("conv"):   # copied and frozen: bit-identical to the source
        np.testing.assert_array_equal(value, src_tree["params"][layer][k])
      else:
        assert not np.array_equal(value, src_tree["params"][layer][k])
  c.init_from.include = ("no_such_layer",)
  with pytest.raises(config_lib.ConfigError, match="copies no parameter from"):
    loop.train_and_evaluate(c, str(tmp_path / "none"))
  c.init_from.include, c.optim.freeze = ("^head",), ()
  c.data.keep_classes = (0, 1, 2, 3, 4)
  c.model.num_classes = 5
  with pytest.raises(config_lib.ConfigError, match=r"takes parameter 'head/bias', but its "
                     r"shape there is \(10,\) and this model's is \(5,\)"):
    loop.train_and_evaluate(c, str(tmp_path / "shape"))


def test_pruned_fine_tuning_keeps_the_pruned_weights_at_zero(trained, data_dir, tmp_path):
  from train import compression

  source = trained("mnist1d_cnn")
  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  c.init_from.workdir = source
  c.init_from.prune = 0.5
  wd = str(tmp_path / "pruned")
  loop.train_and_evaluate(c, wd)
  _, src_tree, _, _ = checkpoint.load_workdir(source)
  _, new_tree, _, _ = checkpoint.load_workdir(wd)
  masks = compression.magnitude_masks(src_tree["params"], 0.5)
  for (path, new), (_, mask), (_, old) in zip(
      *(jax.tree_util.tree_flatten_with_path(t)[0] for t in (new_tree["params"], masks,
                                                             src_tree["params"]))):
    new, mask = np.asarray(new), np.asarray(mask)
    if new.ndim >= 2:
      assert np.all(new[~mask] == 0), path              # pruned and still zero
      assert not np.array_equal(new[mask], np.asarray(old)[mask]), path  # the rest trained
  assert compression.sparsity_of(new_tree["params"]) == pytest.approx(0.5, abs=0.01)
  c.init_from.workdir = ""
  with pytest.raises(config_lib.ConfigError, match="init_from.prune=0.5 prunes a trained run"):
    config_lib.validate(c)


def test_a_scanned_checkpoint_initialises_an_unrolled_model_and_back():
  # init_from between model.scan_layers=True and False (transfer.same_layout): every parameter
  # copied, the same logits
  import jax.numpy as jnp

  from arch.transformer import TransformerLM

  kw = dict(vocab_size=17, width=16, depth=2, num_heads=2, mlp_dim=32, max_len=12)
  scanned, unrolled = TransformerLM(**kw, scan_layers=True), TransformerLM(**kw)
  tokens = jnp.arange(20).reshape(2, 10) % 17
  source = jax.jit(scanned.init)(jax.random.key(0), tokens)["params"]
  target = jax.eval_shape(unrolled.init, jax.random.key(1), tokens)["params"]
  params, copied = transfer.merge(target, transfer.same_layout(source, target), (), "parameter")
  assert len(copied) == len(jax.tree.leaves(target))
  want = jax.jit(scanned.apply)({"params": source}, tokens)
  np.testing.assert_allclose(jax.jit(unrolled.apply)({"params": params}, tokens), want,
                             atol=2e-5)
  back, _ = transfer.merge(source, transfer.same_layout(params, source), (), "parameter")
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), back, source))
