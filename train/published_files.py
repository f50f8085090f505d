"""Published checkpoint files as {name: NumPy array} and back: safetensors (`.safetensors`),
PyTorch pickles read with `weights_only=True` (`.pth`, `.pt`, `.bin`, `.ckpt`: a state dict, or
a dict holding one under "state_dict", "model" or "module"), NumPy archives (`.npz`).

Reading needs the `safetensors` or `torch` package for its format; without it, one line says
how to install it (`pip install -e '.[convert]'`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from train.errors import ConfigError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SUFFIXES = (".safetensors", ".npz") + TORCH_SUFFIXES
INSTALL = "pip install -e '.[convert]'"


def need(package: str, why: str) -> Any:
  """`import package`, or an ImportError in one line naming what it is for and how to get it."""
  import importlib
  try:
    return importlib.import_module(package)
  except ImportError as e:
    raise ImportError(f"{why} needs the {package} package, which is not installed: {INSTALL}"
                      ) from e


def _numpy(tensor: Any) -> np.ndarray:
  import torch
  if tensor.dtype == torch.bfloat16:
    tensor = tensor.float()
  return tensor.detach().cpu().numpy()


def read_state(path: str, field: str = "--checkpoint") -> dict[str, np.ndarray]:
  """The named arrays of the checkpoint file at `path` (`field` names it in errors).

  Raises:
    ConfigError: no such file, a suffix of no known format, or a file holding no state dict.
    ImportError: the package its format needs is missing.
  """
  if not os.path.isfile(path):
    raise ConfigError(f"{field}={path!r} is not a file")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if suffix == ".safetensors":
    torch = need("torch", f"{field}={path!r} (safetensors, read through PyTorch for bfloat16)")
    need("safetensors", f"{field}={path!r}")
    from safetensors.torch import load_file
    del torch
    return {k: _numpy(v) for k, v in load_file(path).items()}
  if suffix in TORCH_SUFFIXES:
    torch = need("torch", f"{field}={path!r} (a PyTorch file)")
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors of a damaged or non-weights file
      raise ConfigError(f"{field}={path!r} cannot be read as PyTorch weights: "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    for key in ("state_dict", "model", "module"):
      if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(hasattr(v, "dtype") for v in obj.values()):
      raise ConfigError(f"{field}={path!r} holds no state dict of tensors")
    return {k: _numpy(v) for k, v in obj.items()}
  raise ConfigError(f"{field}={path!r}: unknown suffix {suffix!r}; expected one of "
                    f"{list(SUFFIXES)}")


def write_state(path: str, state: Mapping[str, np.ndarray]) -> None:
  """Writes `state` to `path` in the format its suffix names (`.safetensors`, `.npz` or a
  PyTorch suffix), through a temporary file renamed into place.

  Raises:
    ConfigError: a suffix of no known format.
    ImportError: the package its format needs is missing.
  """
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in SUFFIXES:
    raise ConfigError(f"--out={path!r}: unknown suffix {suffix!r}; expected one of "
                      f"{list(SUFFIXES)}")
  tmp = f"{path}.tmp-{os.getpid()}{suffix}"
  arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
  if suffix == ".npz":
    np.savez(tmp, **arrays)
  else:
    torch = need("torch", f"--out={path!r}")
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    if suffix == ".safetensors":
      need("safetensors", f"--out={path!r}")
      from safetensors.torch import save_file
      save_file(tensors, tmp)
    else:
      torch.save(tensors, tmp)
  os.replace(tmp, path)
