"""Published layouts (arch/published) against the reference libraries themselves: a torchvision
ResNet and a timm ViT, every parameter and BatchNorm statistic randomised, converted to strata's
model, give the reference's logits on the same random images (float32: within 1e-4 of the
largest logit's scale); sizes the layouts were not written for convert too; export then import
is the identity; and the fields the conversion sets (padding, GELU) are needed."""

import importlib.util

import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.published import links, posemb, timm_layout, torchvision_layout
from train import reference

if not all(importlib.util.find_spec(p) for p in ("torch", "torchvision", "timm")):
  pytest.skip("the reference libraries are not installed: pip install -e '.[convert]'",
              allow_module_level=True)
import torch  # noqa: E402

tv = reference.import_torchvision()
vision_transformer = reference.import_timm().models.vision_transformer


def randomised(module, seed: int):
  """`module` in evaluation mode with every floating tensor of its state random (BatchNorm
  variances positive), so that a swapped or transposed mapping cannot pass."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in module.state_dict().items():
      if not t.dtype.is_floating_point:
        continue
      if name.endswith("running_var"):
        t.copy_(torch.rand(t.shape, generator=g) + 0.5)
      else:
        t.copy_(torch.randn(t.shape, generator=g) * (0.1 if t.ndim > 1 else 0.5))
  return module.eval()


def state_of(module) -> dict[str, np.ndarray]:
  return {k: v.numpy().copy() for k, v in module.state_dict().items()}


def compare(converted, module, size: int, seed: int = 0, **fields) -> tuple[float, float]:
  """(max |strata - reference| logit, max |reference logit|) on 2 random size x size images;
  `fields` replace converted model fields."""
  images = np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)
  want = reference.logits(module, state_of(module), images)
  model = arch.build({**converted.model, **fields})
  got = np.asarray(model.apply(converted.variables, jnp.asarray(images), train=False))
  return float(np.max(np.abs(got - want))), float(np.max(np.abs(want)))


RESNETS = {"basic_1111": ("BasicBlock", [1, 1, 1, 1]), "basic_2111": ("BasicBlock", [2, 1, 1, 1]),
           "bottleneck_1121": ("Bottleneck", [1, 1, 2, 1])}


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_torchvision_resnet_gives_the_references_logits(name):
  block, layers = RESNETS[name]
  module = randomised(tv.models.resnet.ResNet(getattr(tv.models.resnet, block), layers,
                                              num_classes=7), seed=len(name))
  converted = torchvision_layout.resnet(state_of(module))
  assert converted.model["stage_sizes"] == tuple(layers)
  assert converted.model["block"] == ("basic" if block == "BasicBlock" else "bottleneck")
  diff, scale = compare(converted, module, 32)
  assert diff <= 1e-4 * max(1.0, scale), (diff, scale)  # seen: 3e-5 at logits of 57
  # torchvision pads its strided convolutions (1, 1); XLA's SAME would pad (0, 1)
  wrong, _ = compare(converted, module, 32, padding="same")
  assert wrong > 100 * diff + 1e-3


def test_torchvision_resnet_exports_back_exactly_and_refuses_a_wide_resnet():
  module = randomised(tv.models.resnet.ResNet(tv.models.resnet.Bottleneck, [1, 1, 1, 1],
                                              num_classes=3), seed=5)
  state = state_of(module)
  converted = torchvision_layout.resnet(state)
  back = torchvision_layout.to_torchvision(converted.model, converted.variables)
  assert set(back) == set(state)
  for k in state:
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)
  module.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
  wide = tv.models.resnet.ResNet(tv.models.resnet.Bottleneck, [1, 1, 1, 1], width_per_group=128)
  with pytest.raises(links.ConversionError, match="layer1's bottleneck goes 128 -> 128"):
    torchvision_layout.resnet(state_of(wide))
  with pytest.raises(links.ConversionError, match="no torchvision equivalent"):
    torchvision_layout.to_torchvision({**converted.model, "padding": "same"},
                                      converted.variables)


VITS = {"p8_d2": dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4),
        "p4_d3": dict(img_size=16, patch_size=4, embed_dim=48, depth=3, num_heads=3)}


@pytest.mark.parametrize("name", sorted(VITS))
def test_timm_vit_gives_the_references_logits_and_exports_back(name):
  kw = VITS[name]
  module = randomised(vision_transformer.VisionTransformer(num_classes=5, **kw), seed=len(name))
  state = state_of(module)
  converted = timm_layout.vit(state, num_heads=kw["num_heads"])
  assert (converted.model["depth"], converted.model["patch_size"]) == (kw["depth"],
                                                                      kw["patch_size"])
  assert converted.input_shape == (kw["img_size"], kw["img_size"], 3)
  diff, scale = compare(converted, module, kw["img_size"])
  assert diff <= 1e-4 * max(1.0, scale), (diff, scale)  # seen: 2.4e-7 at logits of 1.4
  wrong, _ = compare(converted, module, kw["img_size"], gelu="tanh")
  assert wrong > 10 * diff
  back = timm_layout.to_timm(converted.model, converted.variables)
  assert set(back) == set(state)
  for k in state:
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)


# timm's pooled ViTs: mean pooling with a norm after it (fc_norm, its default), with and without
# a class token; SigLIP's shape (no class token, mean without fc_norm, tanh GELU); attention
# pooling (SigLIP's "map").
POOLED = {
    "avg_fc_norm_cls": dict(global_pool="avg"),
    "avg_fc_norm": dict(global_pool="avg", class_token=False),
    "avg_siglip": dict(global_pool="avg", class_token=False, fc_norm=False,
                       act_layer="gelu_tanh"),
    "map": dict(global_pool="map", class_token=False),
    "map_cls": dict(global_pool="map"),
}


@pytest.mark.parametrize("name", sorted(POOLED))
def test_timm_pooled_vits_give_the_references_logits_and_export_back(name):
  kw = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=3)
  module = randomised(vision_transformer.VisionTransformer(**kw, **POOLED[name]), seed=len(name))
  state = state_of(module)
  gelu = "tanh" if POOLED[name].get("act_layer") == "gelu_tanh" else "exact"
  converted = timm_layout.vit(state, num_heads=4,
                              config={"global_pool": module.global_pool, "gelu": gelu})
  m = converted.model
  assert (m["pool"], m["class_token"] or m["pool"] == "cls", m["norm_after_pool"]) == (
      {"avg": "mean", "map": "map"}[POOLED[name]["global_pool"]],
      POOLED[name].get("class_token", True), "fc_norm.weight" in state)
  diff, scale = compare(converted, module, 16)
  assert diff <= 1e-4 * max(1.0, scale), (diff, scale)
  # what the fields change: pooling the class token too, or the norm before pooling
  if m["class_token"]:
    wrong, _ = compare(converted, module, 16, class_token=False)
    assert wrong > 10 * diff
  if gelu == "tanh":  # SigLIP's, which timm's model knows and its weights do not
    wrong, _ = compare(converted, module, 16, gelu="exact")
    assert wrong > 10 * diff
  back = timm_layout.to_timm(converted.model, converted.variables)
  assert set(back) == set(state)
  for k in state:
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)


def test_timm_vits_strata_cannot_build_are_one_line():
  kw = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=2)
  scaled = vision_transformer.VisionTransformer(**kw, init_values=1e-5)
  with pytest.raises(links.ConversionError, match=r"layer scale \(ls1, ls2\)"):
    timm_layout.vit(state_of(scaled))
  state = state_of(vision_transformer.VisionTransformer(**kw))
  with pytest.raises(links.ConversionError, match="global_pool='avgmax'; strata pools as"):
    timm_layout.vit(state, config={"global_pool": "avgmax"})
  no_cls = state_of(vision_transformer.VisionTransformer(**kw, class_token=False,
                                                          global_pool="avg"))
  with pytest.raises(links.ConversionError, match="global_pool='token' with a checkpoint that "
                     "has no attn_pool and no cls_token"):
    timm_layout.vit(no_cls, config={"global_pool": "token"})
  with pytest.raises(links.ConversionError, match=r"'extra\.weight'.* have no place"):
    timm_layout.vit({**state, "extra.weight": np.zeros(2)}, num_heads=2)
  del state["blocks.0.mlp.fc2.bias"]
  with pytest.raises(links.ConversionError, match=r"lacks \['blocks\.0\.mlp\.fc2\.bias'\]"):
    timm_layout.vit(state, num_heads=2)


def test_a_timm_vit_at_another_image_size_gets_resampled_positions():
  module = randomised(vision_transformer.VisionTransformer(num_classes=3, **VITS["p8_d2"]), 9)
  state = state_of(module)
  converted = timm_layout.vit(state, num_heads=4, image_size=48)  # a 4x4 grid of patches -> 6x6
  assert converted.input_shape == (48, 48, 3) and converted.model["max_len"] == 36
  table = converted.variables["params"]["encoder"]["position_embedding"]
  np.testing.assert_array_equal(table[0], state["pos_embed"][0, 0])  # the class token's row
  np.testing.assert_allclose(table[1:], posemb.resample(state["pos_embed"][0, 1:], 6))
  model = arch.build(converted.model)
  out = model.apply(converted.variables, jnp.zeros((1, 48, 48, 3)))
  assert out.shape == (1, 3) and np.all(np.isfinite(out))
  with pytest.raises(links.ConversionError, match="image_size=50 is not a multiple"):
    timm_layout.vit(state, num_heads=4, image_size=50)
