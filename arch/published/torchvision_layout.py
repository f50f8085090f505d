"""torchvision's ResNets (`torchvision.models.resnet`; timm's `resnet*` share the layout) to and
from strata's 2-D `arch.cnn.ResNet`.

The structure is read from the state dict: `layer<i>.<j>.` gives the stages and their blocks,
`conv3` a bottleneck block, `layer<i>.0.conv1` the stage widths, `fc` the classes. torchvision
pads its strided 3x3 convolutions by 1 on each side, so the model gets `padding="symmetric"`
(strata's default "same" pads 0 before and 1 after where the stride is 2). Wide ResNets and
ResNeXts (a bottleneck wider or grouped unlike 1-4x) have no strata equivalent and are refused.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from arch.published import links as L
from arch.published.converted import Converted

WHAT = "torchvision ResNet"
IGNORE = r"num_batches_tracked$"  # BatchNorm's step counter: no use at inference or fine-tuning


def structure(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The `arch.cnn.ResNet` fields of a torchvision ResNet state dict.

  Raises:
    ConversionError: no ResNet stages, a stem other than 7x7, or a block strata cannot build.
  """
  found: dict[int, int] = {}
  for k in state:
    m = re.match(r"layer(\d+)\.(\d+)\.", k)
    if m:
      found[int(m.group(1))] = max(found.get(int(m.group(1)), 0), int(m.group(2)) + 1)
  if not found or sorted(found) != list(range(1, len(found) + 1)):
    raise L.ConversionError(f"{WHAT}: expected stages layer1, layer2, ... in the checkpoint; "
                            f"found {sorted(found) or 'none'}")
  if "conv1.weight" not in state or "fc.weight" not in state:
    raise L.ConversionError(f"{WHAT}: expected a stem conv1 and a head fc in the checkpoint")
  bottleneck = "layer1.0.conv3.weight" in state
  widths, kernel = [], 0
  for i in sorted(found):
    w = state[f"layer{i}.0.conv1.weight"]
    mid = state[f"layer{i}.0.conv2.weight"]
    widths.append(int(w.shape[0]))
    kernel = int(mid.shape[-1]) if bottleneck else int(w.shape[-1])
    if bottleneck:
      out = state[f"layer{i}.0.conv3.weight"].shape[0]
      if out != 4 * w.shape[0] or mid.shape[1] != w.shape[0]:
        raise L.ConversionError(
            f"{WHAT}: layer{i}'s bottleneck goes {w.shape[0]} -> {mid.shape[0]} (groups of "
            f"{mid.shape[1]}) -> {out} channels; strata's bottleneck expands its width 4x "
            "without groups (a Wide ResNet or ResNeXt has no strata equivalent)")
  stem = state["conv1.weight"]
  if stem.shape[-2:] != (7, 7) or stem.shape[0] != widths[0]:
    raise L.ConversionError(f"{WHAT}: conv1.weight has shape {tuple(stem.shape)}; expected a "
                            f"7x7 stem of {widths[0]} channels (layer1's width)")
  return {"name": "cnn.ResNet", "num_classes": int(state["fc.weight"].shape[0]),
          "stage_sizes": tuple(found[i] for i in sorted(found)), "widths": tuple(widths),
          "block": "bottleneck" if bottleneck else "basic", "stem": "imagenet",
          "kernel_size": kernel, "padding": "symmetric", "ndim": 2}


def resnet_links(model: Mapping[str, Any], has_projection: set[str]) -> list[L.Link]:
  """The links of a ResNet with `model`'s fields; `has_projection`: the blocks ("i.j", 0-based)
  with a projection shortcut."""
  links = L.conv_bn("", "stem", "stem_bn", "conv1", "bn1")
  convs = 3 if model["block"] == "bottleneck" else 2
  for i, blocks in enumerate(model["stage_sizes"]):
    for j in range(blocks):
      prefix, key = f"stage{i}_block{j}", f"layer{i + 1}.{j}"
      for c in range(1, convs + 1):
        links += L.conv_bn(prefix, f"conv{c}", f"bn{c}", f"{key}.conv{c}", f"{key}.bn{c}")
      if f"{i}.{j}" in has_projection:
        links += L.conv_bn(prefix, "proj", "proj_bn", f"{key}.downsample.0", f"{key}.downsample.1")
  return links + L.dense("head", "fc")


def resnet(state: Mapping[str, np.ndarray]) -> Converted:
  """A torchvision ResNet state dict (NumPy arrays) as strata's ResNet: fields and variables."""
  model = structure(state)
  projections = {f"{int(m.group(1)) - 1}.{m.group(2)}" for k in state
                 if (m := re.match(r"layer(\d+)\.(\d+)\.downsample\.0\.weight$", k))}
  links = resnet_links(model, projections)
  return Converted(model, L.to_strata(links, state, WHAT, IGNORE), links)


def to_torchvision(model: Mapping[str, Any], variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """strata ResNet variables as a torchvision state dict (BatchNorm step counters at 0), which
  `torchvision.models.ResNet.load_state_dict` takes.

  Raises:
    ConversionError: a ResNet torchvision cannot build (a CIFAR stem, zero-padding shortcuts,
      "same" padding: its strided convolutions would pad otherwise).
  """
  if (model.get("stem"), model.get("shortcut", "projection"), model.get("padding")) != (
      "imagenet", "projection", "symmetric") or model.get("ndim", 2) != 2:
    raise L.ConversionError(
        f"model {dict(model)} has no torchvision equivalent: torchvision's ResNets are 2-D with "
        "stem='imagenet', shortcut='projection' and padding='symmetric'")
  params = variables["params"]
  projections = {f"{m.group(1)}.{m.group(2)}" for name in params
                 if (m := re.match(r"stage(\d+)_block(\d+)$", name)) and "proj" in params[name]}
  state = L.from_strata(resnet_links(model, projections), variables)
  for k in [k for k in state if k.endswith(".running_var")]:
    state[k[:-len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
  return state
