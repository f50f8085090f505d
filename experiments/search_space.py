"""The search space of `python -m experiments.search`: a grammar of config fields and the values
each may take, conditional fields among them, suggested through an Optuna trial.

A space is `;`-separated items, read in order:

  $depth=[2,3,4];
  model.features=each($depth, [12,25,50]);
  model.kernel_sizes=each($depth, [3,5]);
  optim.learning_rate=loguniform(1e-3,3e-2);
  optim.name=[adam,adamw];
  optim.weight_decay=loguniform(1e-5,1e-2) if optim.name==adamw

- `NAME` is a config field (`optim.learning_rate`) or a `$variable`, a value of the space alone
  that later items may use (not written into the config).
- `[V1,V2,...]` chooses among Python literals (a bare word is a string; tuples allowed);
  `uniform(a,b)` and `loguniform(a,b)` draw floats; `int(a,b)` and `logint(a,b)` draw integers,
  both ends included.
- `each($n, CHOICE)` is a tuple of `$n` values, each its own parameter `FIELD[i]` drawn from
  CHOICE (a list or a range): widths per layer, given a depth.
- `... if NAME==V` (or `NAME!=V`, `NAME in [V1,V2]`) suggests the item only when an earlier item
  took such a value; otherwise the field keeps the experiment's own value.

A grid search needs a flat space of lists (no `each`, no `if`, no ranges): its points are every
combination, as `experiments.sweep` would run them.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any, Sequence

from experiments.sweep_runs import _literal, _split_top, parse_list, parse_range
from train.errors import ConfigError

RANGES = ("uniform", "loguniform", "int", "logint")
PRIMITIVE = (bool, int, float, str, type(None))


@dataclasses.dataclass(frozen=True)
class Choice:
  """One draw: among `values`, or from a range (kind in RANGES, low, high)."""
  values: tuple[Any, ...] = ()
  kind: str = ""
  low: float = 0.0
  high: float = 0.0

  def encoded(self) -> list[Any]:
    """The values as Optuna stores categorical choices (primitives as they are, others as
    their repr: Optuna's storage holds only None, bool, int, float and str)."""
    return [v if isinstance(v, PRIMITIVE) else repr(v) for v in self.values]

  def suggest(self, trial, name: str) -> Any:
    if not self.kind:
      picked = trial.suggest_categorical(name, self.encoded())
      return self.values[self.encoded().index(picked)]
    if self.kind in ("uniform", "loguniform"):
      return trial.suggest_float(name, self.low, self.high, log=self.kind == "loguniform")
    return trial.suggest_int(name, int(self.low), int(self.high), log=self.kind == "logint")


@dataclasses.dataclass(frozen=True)
class Item:
  """One item of the space: `name` takes `choice` (`count` times when it is `each($n, ...)`),
  under a `condition` (name, operator, values) on an earlier item."""
  name: str
  choice: Choice
  count: str = ""  # the $variable that gives the length of an each(...)
  condition: tuple[str, str, tuple[Any, ...]] | None = None

  @property
  def is_variable(self) -> bool:
    return self.name.startswith("$")


def _choice(text: str, where: str) -> Choice:
  text = text.strip()
  if text.startswith("[") and text.endswith("]"):
    return Choice(values=parse_list(text, f"--space {where}"))
  kind, low, high = parse_range(text, RANGES, f"--space {where}", integer=("int", "logint"))
  return Choice(kind=kind, low=low, high=high)


def _condition(text: str, known: dict[str, Item], where: str):
  match = re.fullmatch(r"\s*([\w.$]+)\s*(==|!=| in )\s*(.+?)\s*", text)
  if not match:
    raise ConfigError(f"--space {where}: condition {text.strip()!r}; expected NAME==V, NAME!=V "
                      "or NAME in [V1,V2]")
  name, op, rhs = match.group(1), match.group(2).strip(), match.group(3)
  if name not in known:
    raise ConfigError(f"--space {where}: the condition names {name!r}, which no earlier item "
                      f"defines (defined: {sorted(known)})")
  if op == "in":
    if not (rhs.startswith("[") and rhs.endswith("]")):
      raise ConfigError(f"--space {where}: {name} in {rhs}; expected a list [V1,V2]")
    values = tuple(_literal(v) for v in _split_top(rhs[1:-1], ","))
  else:
    values = (_literal(rhs),)
  return name, op, values


def parse(spec: str) -> list[Item]:
  """The items of a space (module docstring), in order. Raises ConfigError naming the item on a
  malformed one; config fields are checked against an experiment by `check`."""
  items: dict[str, Item] = {}
  for raw in _split_top(spec, ";"):
    raw = raw.strip()
    if not raw:
      continue
    name, sep, rhs = raw.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"\$?[A-Za-z_][\w.]*", name):
      raise ConfigError(f"--space item {raw!r}: expected NAME=VALUES, e.g. "
                        "optim.learning_rate=loguniform(1e-4,1e-1)")
    if name in items:
      raise ConfigError(f"--space: {name!r} appears twice")
    split = re.fullmatch(r"(.*?)\s+if\s+(.*)", rhs.strip())
    body, cond = (split.group(1), split.group(2)) if split else (rhs, "")
    condition = _condition(cond, items, name) if cond else None
    body = body.strip()
    count = ""
    match = re.fullmatch(r"each\((.*)\)", body)
    if match:
      parts = _split_top(match.group(1), ",")
      count = parts[0].strip()
      if len(parts) < 2 or not count.startswith("$"):
        raise ConfigError(f"--space {name}={body}; expected each($variable, CHOICE)")
      if count not in items:
        raise ConfigError(f"--space {name}: each() counts with {count}, which no earlier item "
                          "defines")
      if name.startswith("$"):
        raise ConfigError(f"--space {name}: each() makes a tuple for a config field, not a "
                          "$variable")
      body = ",".join(parts[1:])
    items[name] = Item(name, _choice(body, name), count=count, condition=condition)
    if count:
      counts = items[count].choice
      small = min(counts.values) if counts.values else counts.low
      if not all(isinstance(v, int) and v >= 0 for v in counts.values) or small < 0:
        raise ConfigError(f"--space {name}: {count} gives the length of each(); expected "
                          "non-negative integers")
  return list(items.values())


def check(items: Sequence[Item], config) -> None:
  """Every config field of the space exists in `config` (ConfigError with a suggestion)."""
  from train import config as config_lib

  for item in items:
    if item.is_variable:
      continue
    if item.name == "seed":
      raise ConfigError("--space: 'seed' is the search's training seed (--config.seed), "
                        "not searched")
    config_lib.get_field(config, item.name, f"--space {item.name}")


def _holds(condition, values: dict[str, Any]) -> bool:
  if condition is None:
    return True
  name, op, wanted = condition
  if name not in values:  # the item it depends on was itself left out
    return False
  present = values[name] in wanted
  return present if op in ("==", "in") else not present


def suggest(items: Sequence[Item], trial) -> dict[str, Any]:
  """The point a trial takes: {config field: value} (variables left out), each item suggested
  under its Optuna parameter name, in order, skipping those whose condition does not hold."""
  values: dict[str, Any] = {}
  for item in items:
    if not _holds(item.condition, values):
      continue
    if item.count:
      values[item.name] = tuple(item.choice.suggest(trial, f"{item.name}[{i}]")
                                for i in range(int(values[item.count])))
    else:
      values[item.name] = item.choice.suggest(trial, item.name)
  return {k: v for k, v in values.items() if not k.startswith("$")}


def grid(items: Sequence[Item]) -> dict[str, list[Any]]:
  """The space as Optuna's GridSampler takes it: {parameter: encoded values}. Raises ConfigError
  if it is not a flat space of lists."""
  bad = [i.name for i in items if i.count or i.condition or i.choice.kind]
  if bad:
    raise ConfigError(f"--sampler grid needs a flat space of lists; {bad} use each(), if or a "
                      "range (use --sampler random or tpe)")
  return {i.name: i.choice.encoded() for i in items}


def decode(items: Sequence[Item], params: dict[str, Any]) -> dict[str, Any]:
  """A trial's stored parameters -> the point, as `suggest` made it (for tables and reruns)."""
  values: dict[str, Any] = {}
  for item in items:
    if item.count:
      keys = [k for k in params if k.startswith(item.name + "[")]
      if keys:
        values[item.name] = tuple(_value(item.choice, params[f"{item.name}[{i}]"])
                                  for i in range(len(keys)))
    elif item.name in params:
      values[item.name] = _value(item.choice, params[item.name])
  return {k: v for k, v in values.items() if not k.startswith("$")}


def _value(choice: Choice, stored: Any) -> Any:
  if choice.kind:
    return stored
  encoded = choice.encoded()
  return choice.values[encoded.index(stored)] if stored in encoded else ast.literal_eval(stored)
