"""Published checkpoint files as {name: NumPy array} and back: safetensors (`.safetensors`),
PyTorch pickles read with `weights_only=True` (`.pth`, `.pt`, `.bin`, `.ckpt`: a state dict, or
a dict holding one under "state_dict", "model" or "module"), NumPy archives (`.npz`), and Hugging
Face model folders (`config.json` beside `model.safetensors`, the shards a
`model.safetensors.index.json` lists, read one by one, or `pytorch_model.bin`).

Reading needs the `safetensors` or `torch` package for its format; without it, one line says
how to install it (`pip install -e '.[convert]'`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from arch.published import links
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


def _numpy(tensor: Any, bfloat16: bool = False) -> np.ndarray:
  """A torch tensor as NumPy; bfloat16 as float32, or kept (`bfloat16`: ml_dtypes' type)."""
  import torch
  if tensor.dtype == torch.bfloat16:
    if bfloat16:
      return tensor.detach().cpu().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    tensor = tensor.float()
  return tensor.detach().cpu().numpy()


def to_torch(a: np.ndarray) -> Any:
  """A NumPy array as a torch tensor (ml_dtypes' bfloat16 as torch's), sharing no memory."""
  import torch
  a = np.array(a, order="C")
  if a.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(a)


def _need_safetensors(field: str) -> None:
  """safetensors, and PyTorch to read its bfloat16, or one line naming `field`."""
  need("torch", f"{field} (safetensors, read through PyTorch for bfloat16)")
  need("safetensors", field)


def _safetensors_loader(path: str, key: str) -> np.ndarray:
  from safetensors import safe_open
  with safe_open(path, framework="pt") as f:
    return _numpy(f.get_tensor(key), bfloat16=True)


def _lazy_safetensors(files: list[str], field: str) -> links.Lazy:
  """The tensors of safetensors `files` as a `links.Lazy`: their names from the files' headers,
  each tensor read from its file when asked for, in its own precision (bfloat16 stays bfloat16),
  and not kept."""
  _need_safetensors(field)
  from safetensors import safe_open
  loaders = {}
  for path in files:
    with safe_open(path, framework="pt") as f:
      for key in f.keys():
        loaders[key] = functools.partial(_safetensors_loader, path, key)
  return links.Lazy(loaders)


def read_state(path: str, field: str = "--checkpoint",
               lazy: bool = False) -> Mapping[str, np.ndarray]:
  """The named arrays of the checkpoint file or Hugging Face folder at `path` (`field` names it
  in errors). `lazy`: safetensors files and shards are not read here but tensor by tensor as
  a conversion asks for them (`links.Lazy`), each in its stored precision, so that a sharded
  checkpoint converts within the memory of the converted model (a 7B model's bfloat16 weights,
  14 GB, not its float32 copy and the checkpoint beside it); other formats are read whole.

  Raises:
    ConfigError: no such file, a suffix of no known format, or a file holding no state dict.
    ImportError: the package its format needs is missing.
  """
  if os.path.isdir(path):
    return _read_folder(path, field, lazy)
  if not os.path.isfile(path):
    raise ConfigError(f"{field}={path!r} is neither a file nor a folder")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if suffix == ".safetensors" and lazy:
    return _lazy_safetensors([path], f"{field}={path!r}")
  if suffix == ".safetensors":
    _need_safetensors(f"{field}={path!r}")
    from safetensors.torch import load_file
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


def _read_folder(path: str, field: str, lazy: bool) -> Mapping[str, np.ndarray]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f).get("weight_map", {}).values()))
    if lazy:
      return _lazy_safetensors([os.path.join(path, s) for s in shards], f"{field}={path!r}")
    state: dict[str, np.ndarray] = {}
    for shard in shards:
      state.update(read_state(os.path.join(path, shard), f"{field} (shard {shard})"))
    return state
  for name in ("model.safetensors", "pytorch_model.bin"):
    if os.path.exists(os.path.join(path, name)):
      return read_state(os.path.join(path, name), field, lazy)
  raise ConfigError(f"{field}={path!r} is a folder without model.safetensors, "
                    "model.safetensors.index.json or pytorch_model.bin")


def read_folder_config(path: str) -> dict[str, Any]:
  """A Hugging Face folder's `config.json` ({} for a file or a folder without one)."""
  config = os.path.join(path, "config.json")
  if not (os.path.isdir(path) and os.path.exists(config)):
    return {}
  with open(config) as f:
    return json.load(f)


def write_folder(path: str, state: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> None:
  """A Hugging Face model folder at `path` (`model.safetensors`, `config.json`) that
  `from_pretrained(path)` loads, made beside it and renamed into place.

  Raises:
    ConfigError: `path` exists.
  """
  if os.path.exists(path):
    raise ConfigError(f"--export={path} exists; export writes a new folder and overwrites "
                      "nothing")
  tmp = f"{path.rstrip(os.sep)}.tmp-{os.getpid()}"
  os.makedirs(tmp)
  write_state(os.path.join(tmp, "model.safetensors"), state)
  with open(os.path.join(tmp, "config.json"), "w") as f:
    json.dump(dict(config), f, indent=2)
  os.rename(tmp, path)


def digest(path: str) -> str:
  """The SHA-256 of a file, or of a folder's files (names and contents, in name order)."""
  h = hashlib.sha256()
  names = [path] if os.path.isfile(path) else [
      os.path.join(folder, f) for folder, _, fs in sorted(os.walk(path)) for f in sorted(fs)]
  for name in names:
    h.update(os.path.relpath(name, path).encode())
    with open(name, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()


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
  if suffix == ".npz":
    np.savez(tmp, **{k: np.asarray(v) for k, v in state.items()})
  else:
    torch = need("torch", f"--out={path!r}")
    tensors = {k: to_torch(v) for k, v in state.items()}
    if suffix == ".safetensors":
      need("safetensors", f"--out={path!r}")
      from safetensors.torch import save_file
      save_file(tensors, tmp, metadata={"format": "pt"})  # what transformers checks for
    else:
      torch.save(tensors, tmp)
  os.replace(tmp, path)
