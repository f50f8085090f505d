"""Which config fields a run reads: a set field that nothing reads is an error, not a silent no-op.

    with field_use.Record(config) as record:
      ...build the run...
    field_use.check_unread(config, train.config.base(paradigm), record)  # ConfigError if unread

A field counts as *set* when its value differs from `train.config.base(paradigm)`'s default (every
field of the free-form `model` and `evals` sections is set). While a `Record` is open, every read
of a ConfigDict of that config (`c.optim.warmup_steps`, `c["optim"]`, `.get`, `.items()`,
`.to_dict()`, copies made with `copy_and_resolve_references`) is recorded by dotted path.

Why an access record and not rules per field: the bug it exists for (`optim.warmup_steps` with
`schedule="cosine"`, which `optax.cosine_decay_schedule` never read) was one branch of code not
reading a field; a table of "field X matters when Y" is a second copy of every such branch, which
goes stale the day a branch changes. The record asks the code itself. What it cannot see: a field
that is read and then not used (`lr = o.learning_rate` in a branch that ignores `lr`), and reads
that happen after the first step; `train.run.build` and the loop's settings are read inside the
record, so every field a run uses is read before anything is compiled or written.

Validation reads every field; it runs under `unrecorded()` so that its reads do not count.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any, Iterator

import ml_collections as mlc

from train import files
from train.errors import ConfigError

# Sections whose every field is set by whoever writes them (the model's constructor arguments,
# the named evaluations).
FREE_FORM = ("model", "evals")
# Settings of the evaluation tools that a run saves for them in config.json and need not read
# itself: `python -m eval`'s report, `eval.generative`'s reference classifier, and the diffusion
# sampler, which a run reads only when it draws sample grids.
READ_BY_TOOLS = ("report.", "generative.reference", "diffusion.sampler", "diffusion.sample_steps",
                 "diffusion.eta", "diffusion.clip", "diffusion.guidance_scale")
# What a field depends on, for the error's line.
HINTS = {
    "optim.warmup_steps": "optim.schedule='warmup_cosine' or 'constant' warms up",
    "optim.end_lr_factor": "optim.schedule='cosine' or 'warmup_cosine' reads it",
    "optim.step_boundaries": "optim.schedule='step' reads it",
    "optim.step_factor": "optim.schedule='step' reads it",
    "optim.momentum": "optim.name='momentum' or 'nesterov' reads it",
}

_ORIGINAL_GETITEM = mlc.ConfigDict.__getitem__
_ORIGINAL_COPY = mlc.ConfigDict.copy_and_resolve_references
_ACTIVE: list["Record"] = []
_LOCAL = threading.local()


def _nodes(config: mlc.ConfigDict, prefix: str = "") -> Iterator[tuple[mlc.ConfigDict, str]]:
  yield config, prefix
  for key in config.keys():
    value = config._fields[key]  # pylint: disable=protected-access  (no read recorded)
    if isinstance(value, mlc.ConfigDict):
      yield from _nodes(value, f"{prefix}{key}.")


def _getitem(self: mlc.ConfigDict, key: Any) -> Any:
  value = _ORIGINAL_GETITEM(self, key)
  if _ACTIVE and not getattr(_LOCAL, "paused", False) and isinstance(key, str):
    for record in _ACTIVE:
      prefix = record.prefixes.get(id(self))
      if prefix is not None:
        record.read.add(prefix + key)
  return value


def _copy(self: mlc.ConfigDict, visit_map: Any = None) -> mlc.ConfigDict:
  copy = _ORIGINAL_COPY(self, visit_map)
  for record in _ACTIVE:
    prefix = record.prefixes.get(id(self))
    if prefix is not None:  # reads of the copy count as reads of the original
      for node, sub in _nodes(copy):
        record.prefixes[id(node)] = prefix + sub
        record.keep.append(node)
  return copy


class Record:
  """A context that records the dotted paths of `config`'s fields read while it is open (in any
  thread but under `unrecorded()`). `read` is the set of paths."""

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.prefixes = {id(node): prefix for node, prefix in _nodes(config)}
    self.keep: list[mlc.ConfigDict] = []  # copies whose ids are in `prefixes`
    self.read: set[str] = set()

  def __enter__(self) -> "Record":
    if not _ACTIVE:
      mlc.ConfigDict.__getitem__ = _getitem
      mlc.ConfigDict.copy_and_resolve_references = _copy
    _ACTIVE.append(self)
    return self

  def __exit__(self, *exc: Any) -> None:
    _ACTIVE.remove(self)
    if not _ACTIVE:
      mlc.ConfigDict.__getitem__ = _ORIGINAL_GETITEM
      mlc.ConfigDict.copy_and_resolve_references = _ORIGINAL_COPY


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
  """Reads inside this context (validation, serialisation) are not recorded."""
  before = getattr(_LOCAL, "paused", False)
  _LOCAL.paused = True
  try:
    yield
  finally:
    _LOCAL.paused = before


def set_fields(config: mlc.ConfigDict, base: mlc.ConfigDict) -> list[str]:
  """The dotted paths of `config`'s leaf fields whose value differs from the default in `base`
  (`train.config.base(config.paradigm)`), and every field of `FREE_FORM` sections but
  `model.name` (which `arch.build` always reads), sorted; `READ_BY_TOOLS` left out."""
  with unrecorded():
    values = files.flatten(json.loads(config.to_json_best_effort()))
    defaults = files.flatten(json.loads(base.to_json_best_effort()))
  out = []
  for path, value in values.items():
    if path.startswith(READ_BY_TOOLS):
      continue
    if path.split(".")[0] in FREE_FORM:
      if path != "model.name":
        out.append(path)
    elif path not in defaults or defaults[path] != value:
      out.append(path)
  return sorted(out)


def unread(config: mlc.ConfigDict, base: mlc.ConfigDict, record: Record) -> list[str]:
  """The set fields (`set_fields`) that nothing read while `record` was open (a section read
  whole, by `.to_dict()` or `.items()`, reads each of its fields)."""
  return [path for path in set_fields(config, base) if path not in record.read]


def check_unread(config: mlc.ConfigDict, base: mlc.ConfigDict, record: Record) -> None:
  """Raises ConfigError naming every set field nothing read, with its value.

  Raises:
    ConfigError: one line: the fields, their values, and that nothing reads them.
  """
  fields = unread(config, base, record)
  if not fields:
    return
  with unrecorded():
    values = files.flatten(json.loads(config.to_json_best_effort()))
  shown = ", ".join(f"{f}={values.get(f)!r}" for f in fields)
  it = "it has" if len(fields) == 1 else "they have"
  hints = "; ".join(HINTS[f] for f in fields if f in HINTS)
  raise ConfigError(f"{shown}: set but never read by this run, so {it} no effect; remove it or "
                    f"set what it depends on{' (' + hints + ')' if hints else ''}; see "
                    "docs/guide.md, 'Every field takes effect'")
