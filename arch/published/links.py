"""Links between a strata variable and a published tensor, and the two directions they give.

A `Link` names a strata variable (`collection`, "/"-joined `path`), the published tensor's `key`
and the layout change between them (`kind`). A published tensor fused from several strata
variables (a ViT's (3D, D) `qkv` projection) is `parts` links, each with its `part`, cut and
joined along its first axis.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

# kind: published layout -> strata layout
#   copy        the same array
#   conv        PyTorch (O, I, kh, kw)           -> (kh, kw, I, O)
#   dense       PyTorch Linear (O, I)            -> (I, O)
#   heads_in    Linear (N * H, D) to heads       -> DenseGeneral (D, N, H); `size` = N
#   heads_bias  (N * H,)                         -> (N, H); `size` = N
#   heads_out   Linear (D, N * H) from heads     -> DenseGeneral (N, H, D); `size` = N
#   patch       Conv (D, C, p, p) over patches   -> Dense (p * p * C, D) of a row-major patch
#   flat_patch  flax Conv (p, p, C, D)           -> Dense (p * p * C, D)
#   lead        (1, ...)                         -> (...): a leading axis of 1 dropped


class ConversionError(ValueError):
  """A checkpoint that does not fit the layout or the model: one line naming the tensor or the
  variable, its shape and what was expected."""
  exit_status = 2  # train/errors.py's contract for a usage or config error


class Lazy(Mapping[str, np.ndarray]):
  """A state dict whose arrays are read when asked for and not kept (`loaders`: {key: () ->
  array}), so that converting a checkpoint of many shards holds only the converted model whole,
  not the checkpoint beside it. Keys can be dropped (`pop`)."""

  def __init__(self, loaders: Mapping[str, Callable[[], np.ndarray]]):
    self._loaders = dict(loaders)

  def __getitem__(self, key: str) -> np.ndarray:
    return self._loaders[key]()

  def __iter__(self) -> Iterator[str]:
    return iter(self._loaders)

  def __len__(self) -> int:
    return len(self._loaders)

  def pop(self, key: str, *default: Any) -> Any:
    if key not in self._loaders:
      if default:
        return default[0]
      raise KeyError(key)
    return self._loaders.pop(key)()


def _read(state: Mapping[str, np.ndarray], key: str,
          value: Callable[[str, np.ndarray], np.ndarray] | None) -> np.ndarray:
  return value(key, state[key]) if value else state[key]


def view(state: Mapping[str, np.ndarray], key: Callable[[str], str] = lambda k: k,
         value: Callable[[str, np.ndarray], np.ndarray] | None = None) -> Lazy:
  """`state` under new keys (`key(k)`), each array transformed by `value(k, array)` (k the old
  key) when it is read: a layout's renaming without reading anything."""
  return Lazy({key(k): functools.partial(_read, state, k, value) for k in state})


@dataclasses.dataclass(frozen=True)
class Link:
  collection: str   # "params" or "batch_stats"
  path: str         # "stage0_block0/conv1/kernel"
  key: str          # "layer1.0.conv1.weight"
  kind: str = "copy"
  size: int = 0     # heads for heads_*
  part: int = 0     # which of `parts` equal slices of `key` along its first axis
  parts: int = 1


def _to_strata(link: Link, a: np.ndarray) -> np.ndarray:
  if link.parts > 1:
    n = a.shape[0] // link.parts
    a = a[link.part * n:(link.part + 1) * n]
  if link.kind == "conv":
    return a.transpose(2, 3, 1, 0)
  if link.kind == "dense":
    return a.T
  if link.kind == "heads_in":
    return a.T.reshape(a.shape[1], link.size, -1)
  if link.kind == "heads_bias":
    return a.reshape(link.size, -1)
  if link.kind == "heads_out":
    return a.T.reshape(link.size, -1, a.shape[0])
  if link.kind == "patch":
    return a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0])
  if link.kind == "flat_patch":
    return a.reshape(-1, a.shape[-1])
  if link.kind == "lead":
    return a[0]
  return a


def _from_strata(link: Link, a: np.ndarray, channels: int = 0) -> np.ndarray:
  if link.kind == "conv":
    return a.transpose(3, 2, 0, 1)
  if link.kind == "dense":
    return a.T
  if link.kind == "heads_in":
    return a.reshape(a.shape[0], -1).T
  if link.kind == "heads_bias":
    return a.reshape(-1)
  if link.kind == "heads_out":
    return a.reshape(-1, a.shape[-1]).T
  if link.kind in ("patch", "flat_patch"):
    p = int(round((a.shape[0] // channels) ** 0.5))
    a = a.reshape(p, p, channels, a.shape[1])
    return a if link.kind == "flat_patch" else a.transpose(3, 2, 0, 1)
  if link.kind == "lead":
    return a[None]
  return a


def _nest(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a/b/c": leaf} of a nested dict."""
  out: dict[str, Any] = {}
  for k, v in tree.items():
    name = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, name))
    else:
      out[name] = v
  return out


def to_strata(links: Iterable[Link], state: Mapping[str, np.ndarray], what: str,
              ignore: str = r"$^") -> dict[str, Any]:
  """Strata variables {collection: tree} from a published state dict, by `links`. Every tensor
  of `state` must be used by a link or match `ignore` (a regex: BatchNorm's step counters).

  Raises:
    ConversionError: a tensor the links need is missing, or one no link uses.
  """
  links = list(links)
  missing = sorted({ln.key for ln in links} - set(state))
  if missing:
    raise ConversionError(f"{what}: the checkpoint lacks {missing[:5]}"
                          f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
  unused = sorted(k for k in set(state) - {ln.key for ln in links} if not re.search(ignore, k))
  if unused:
    raise ConversionError(f"{what}: the checkpoint's {unused[:5]}"
                          f"{f' and {len(unused) - 5} more' if len(unused) > 5 else ''} "
                          "have no place in strata's model (another architecture?)")
  flat: dict[str, dict[str, np.ndarray]] = {}
  for ln in links:
    flat.setdefault(ln.collection, {})[ln.path] = _to_strata(ln, np.asarray(state[ln.key]))
  return {c: _nest(f) for c, f in flat.items()}


def from_strata(links: Iterable[Link], variables: Mapping[str, Any],
                channels: int = 0) -> dict[str, np.ndarray]:
  """The published state dict of strata `variables` ({collection: tree}) by `links`: the inverse
  of `to_strata` (fused tensors joined from their parts). `channels`: the image channels, which
  a `patch` link needs to fold its kernel back."""
  flat = {c: flatten(t) for c, t in variables.items()}
  pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
  for ln in links:
    value = _from_strata(ln, np.asarray(flat[ln.collection][ln.path]), channels)
    pieces.setdefault(ln.key, []).append((ln.part, value))
  return {k: np.concatenate([v for _, v in sorted(p, key=lambda x: x[0])])
          if len(p) > 1 else p[0][1] for k, p in pieces.items()}


def check_shapes(variables: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
  """Raises ConversionError naming each variable whose path or shape differs between
  `variables` and `expected` (the model's own, e.g. from `jax.eval_shape` of its init)."""
  got = {f"{c}/{k}": v.shape for c, t in variables.items() for k, v in flatten(t).items()}
  want = {f"{c}/{k}": tuple(v.shape) for c, t in expected.items()
          for k, v in flatten(t).items()}
  lines = [f"{k}: converted {got[k]}, the model's {want[k]}" for k in sorted(set(got) & set(want))
           if tuple(got[k]) != want[k]]
  lines += [f"{k}: the model has it, the checkpoint gives none"
            for k in sorted(set(want) - set(got))]
  lines += [f"{k}: converted, but the model has no such variable"
            for k in sorted(set(got) - set(want))]
  if lines:
    raise ConversionError(f"{what}: {len(lines)} mismatch(es) with strata's model: "
                          + "; ".join(lines[:4]) + (" ..." if len(lines) > 4 else ""))


def conv_bn(prefix: str, conv: str, bn: str, torch_conv: str, torch_bn: str) -> list[Link]:
  """A bias-free convolution and its BatchNorm: strata `prefix/conv`, `prefix/bn` (scale, bias;
  batch_stats mean, var) from PyTorch's `torch_conv.weight` and `torch_bn.{weight, bias,
  running_mean, running_var}`."""
  p = f"{prefix}/" if prefix else ""
  return [Link("params", f"{p}{conv}/kernel", f"{torch_conv}.weight", "conv"),
          Link("params", f"{p}{bn}/scale", f"{torch_bn}.weight"),
          Link("params", f"{p}{bn}/bias", f"{torch_bn}.bias"),
          Link("batch_stats", f"{p}{bn}/mean", f"{torch_bn}.running_mean"),
          Link("batch_stats", f"{p}{bn}/var", f"{torch_bn}.running_var")]


def dense(path: str, key: str) -> list[Link]:
  """A strata Dense (kernel (I, O), bias) from a PyTorch Linear `key.{weight, bias}`."""
  return [Link("params", f"{path}/kernel", f"{key}.weight", "dense"),
          Link("params", f"{path}/bias", f"{key}.bias")]


def norm(path: str, key: str) -> list[Link]:
  """A strata LayerNorm (scale, bias) from PyTorch's `key.{weight, bias}`."""
  return [Link("params", f"{path}/scale", f"{key}.weight"),
          Link("params", f"{path}/bias", f"{key}.bias")]


def fused_attention(path: str, qkv: str, proj: str, heads: int) -> list[Link]:
  """A strata attention's four projections (`path`/{query,key,value,out}) from PyTorch Linears:
  the fused `qkv` (3 D, D), cut in three, and the output `proj` (timm's ViT; GPT-2's once its
  Conv1D kernels are transposed)."""
  links = []
  for part, name in enumerate(("query", "key", "value")):
    links += [Link("params", f"{path}/{name}/kernel", f"{qkv}.weight", "heads_in", heads, part,
                   3),
              Link("params", f"{path}/{name}/bias", f"{qkv}.bias", "heads_bias", heads, part, 3)]
  return links + [Link("params", f"{path}/out/kernel", f"{proj}.weight", "heads_out", heads),
                  Link("params", f"{path}/out/bias", f"{proj}.bias")]
