"""big_vision ViTs (arch/published/big_vision_layout.py) against big_vision's own model (its
`models/vit.py`, vendored under benchmarks/third_party/ at a named commit), every parameter
randomised: class-token, mean and attention pooling, learned and sin-cos positions, a pre-logits
layer, unrolled and scanned blocks, behind a `params/` prefix; strata's ViT gives big_vision's
logits (float32, within 1e-4 of the largest), and export then import is the identity."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.published import big_vision_layout
from benchmarks.third_party.big_vision_vit import vit as bv_vit

CASES = {
    "tok_learn": dict(pool_type="tok", posemb="learn"),
    "gap_sincos_rep": dict(pool_type="gap", posemb="sincos2d", rep_size=True),
    "gap_learn_scan": dict(pool_type="gap", posemb="learn", scan=True),
    "map_learn": dict(pool_type="map", posemb="learn"),
    "map_sincos_scan": dict(pool_type="map", posemb="sincos2d", scan=True),
}


def flat_params(case: str, size: int):
  model = bv_vit.Model(num_classes=5, width=32, depth=2, mlp_dim=48, num_heads=4,
                       patch_size=(8, 8), head_zeroinit=False, **CASES[case])
  x = jnp.zeros((1, size, size, 3))
  params = model.init(jax.random.key(0), x)["params"]
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(len(case))
  leaves = [rng.normal(size=a.shape).astype(np.float32) * (0.3 if a.ndim > 1 else 1.0)
            for a in leaves]
  params = jax.tree.unflatten(tree, leaves)
  flat = {"params/" + "/".join(k): np.asarray(v)
          for k, v in flax.traverse_util.flatten_dict(params).items()}
  return model, params, flat


@pytest.mark.parametrize("case", sorted(CASES))
def test_big_vision_vit_gives_big_visions_logits(case):
  model, params, flat = flat_params(case, 32)
  converted = big_vision_layout.vit(flat)
  if CASES[case]["posemb"] == "sincos2d":  # the size is not in the weights: the caller's
    converted.model["max_len"] = 16
  images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  want, _ = model.apply({"params": params}, images)
  got = arch.build(converted.model).apply(converted.variables, jnp.asarray(images))
  diff, scale = float(np.max(np.abs(got - want))), float(np.max(np.abs(want)))
  assert diff <= 1e-4 * max(1.0, scale), (diff, scale)
  back = big_vision_layout.to_big_vision(converted.model, converted.variables)
  unrolled = big_vision_layout._plain(flat)
  assert set(back) == set(unrolled)
  for k in unrolled:
    np.testing.assert_array_equal(back[k], unrolled[k], err_msg=k)
