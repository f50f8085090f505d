"""Reading and setting config fields by dotted path: command-line overrides parsed as the field's
type, unknown fields answered with the closest names. `train.config` re-exports these."""

from __future__ import annotations

import ast
import difflib
from typing import Any

import ml_collections as mlc

from train.errors import ConfigError, FlagError


def parse_sets(items: list[str] | None) -> dict[str, str]:
  """{"SECTION.FIELD": "VALUE"} from command-line `--set SECTION.FIELD=VALUE` items."""
  out = {}
  for item in items or []:
    key, sep, value = item.partition("=")
    if not sep:
      raise FlagError(f"--set {item!r}: expected FIELD=VALUE, e.g. diffusion.sampler=ddpm")
    out[key] = value
  return out


def parse_value(old: Any, text: str) -> Any:
  """A command-line string as a value of the type of the field's current value `old`: `true` or
  `false` (or 1, 0) for a bool, a number for an int or float, a Python literal for a tuple (a
  bare value becomes a 1-tuple: `4` -> (4,)), the text itself for a string, and a literal or
  else the text for a field that is None."""
  if isinstance(old, bool):
    lowered = text.strip().lower()
    if lowered not in ("true", "false", "1", "0"):
      return text  # set_field names the expected type
    return lowered in ("true", "1")
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    return text
  if isinstance(old, (tuple, list)) and not isinstance(value, (tuple, list)):
    value = (value,)
  return value


def fields(config: mlc.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf field's dotted path, e.g. ["data.augment.flip", ..., "seed"]."""
  out = []
  for key in sorted(config.keys()):
    value = config[key]
    path = f"{prefix}{key}"
    out.extend(fields(value, path + ".") if isinstance(value, mlc.ConfigDict) else [path])
  return out


def closest_fields(config: mlc.ConfigDict, path: str, n: int = 3) -> list[str]:
  """The fields a mistyped dotted `path` most likely meant: in the same section first, a field
  whose initials it is (`optim.lr` -> `optim.learning_rate`) or that it begins, then close
  spellings of the field name there, then close spellings of the whole path."""
  every = fields(config)
  section, _, leaf = path.rpartition(".")
  siblings = [f for f in every if f.rpartition(".")[0] == section]
  leaves = {f.rpartition(".")[2]: f for f in siblings}
  out = [f for name, f in leaves.items()
         if "".join(w[0] for w in name.split("_") if w) == leaf or
         (len(leaf) >= 3 and name.startswith(leaf))]
  out += [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=n, cutoff=0.6)]
  out += difflib.get_close_matches(path, every, n=n, cutoff=0.6)
  return list(dict.fromkeys(out))[:n]


def get_field(config: mlc.ConfigDict, path: str, where: str = "") -> Any:
  """The value at dotted `path`. Raises ConfigError naming the path and the closest fields."""
  node = config
  for part in path.split("."):
    if not isinstance(node, mlc.ConfigDict) or part not in node:
      close = closest_fields(config, path)
      hint = f"; did you mean {' or '.join(close)}?" if close else ""
      raise ConfigError(f"{where or path}: the config has no field {path!r}{hint}")
    node = node[part]
  if isinstance(node, mlc.ConfigDict):
    raise ConfigError(f"{where or path}: {path!r} is a section, not a field; expected one of "
                      f"{fields(node, path + '.')[:8]}")
  return node


def set_field(config: mlc.ConfigDict, path: str, value: Any, where: str = "") -> None:
  """Sets dotted `path` to `value` if it has the field's type: an int for an int field (a bool
  for a bool), an int or float for a float field, a list or tuple for a tuple field (stored as a
  tuple), anything for a field that is None. Does not validate the config as a whole.

  Raises:
    ConfigError: an unknown field, or a value of another type, naming both.
  """
  old = get_field(config, path, where)
  parent, _, leaf = path.rpartition(".")
  node = config
  for part in parent.split(".") if parent else []:
    node = node[part]
  kind = type(old)
  if isinstance(old, bool) or isinstance(value, bool):
    ok = isinstance(old, bool) and isinstance(value, bool)
  elif isinstance(old, int):
    ok = isinstance(value, int)
  elif isinstance(old, float):
    ok = isinstance(value, (int, float))
    value = float(value) if ok else value
  elif isinstance(old, (tuple, list)):
    ok = isinstance(value, (tuple, list))
    value = tuple(value) if ok else value
  elif old is None:
    ok = True
  else:
    ok = isinstance(value, kind)
  if not ok:
    article = "an" if kind.__name__[0] in "aeiou" else "a"
    expected = ("a list or tuple" if isinstance(old, (tuple, list)) else
                f"{article} {kind.__name__}")
    raise ConfigError(f"{where or path}: {path}={value!r} is a {type(value).__name__}; "
                      f"expected {expected} (the field's default is {old!r})")
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f"{where or path}: {path}={value!r}: {e}") from None
