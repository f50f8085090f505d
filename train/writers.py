"""Where a run's records go besides metrics.jsonl: `config.logging`.

    logging.writers = ("jsonl", "tensorboard")   # and/or "wandb"; "jsonl" always
    logging.histograms_every = 0                  # N > 0: histograms every N steps
    logging.wandb.project / entity / name / tags / mode

- "jsonl": WORKDIR/metrics.jsonl and throughput.jsonl, the record of truth (`MetricWriter`):
  resume, `python -m eval`, the reports and the tests read it. It cannot be left out.
- "tensorboard": scalars, histograms and the sample grids of generative runs (WORKDIR/samples)
  as event files in WORKDIR/tensorboard.
- "wandb": a Weights & Biases run (`pip install -e '.[wandb]'`): the same scalars under the same
  tags, the histograms, the sample grids, and as its config the resolved config and the run's
  lineage. Its run id is kept in WORKDIR/wandb_run.json, so a resumed run continues the same W&B
  run. `mode` "offline" (the default: no account or network needed) writes it under
  WORKDIR/wandb, for `wandb sync WORKDIR/wandb/offline-run-*` later; "online" sends it as it
  goes.

Only process 0 writes. All of `logging.*` may change when a run resumes.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from typing import Any

import ml_collections as mlc

from train import files
from train.errors import ConfigError

WRITERS = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("offline", "online")
WANDB_RUN = "wandb_run.json"  # {"id": the W&B run id, "project": ...}: resume continues it


def defaults() -> mlc.ConfigDict:
  """The `logging` section with its defaults."""
  c = mlc.ConfigDict()
  c.writers = ("jsonl", "tensorboard")  # of WRITERS; "jsonl" always
  c.histograms_every = 0                # N > 0: gradient, update and parameter histograms
  c.wandb = mlc.ConfigDict()
  c.wandb.project = "strata"
  c.wandb.entity = ""                   # "" = the account's default entity
  c.wandb.name = ""                     # "" = the workdir's folder name
  c.wandb.tags = ()
  c.wandb.mode = "offline"              # offline|online
  return c


def check(logging: Any) -> None:
  """Raises ConfigError, one line naming the field, for a bad `logging` section."""
  writers = tuple(logging.writers)
  unknown = [w for w in writers if w not in WRITERS]
  if unknown or len(set(writers)) != len(writers):
    raise ConfigError(f"logging.writers={writers}; expected distinct names of {list(WRITERS)}")
  if "jsonl" not in writers:
    raise ConfigError(f"logging.writers={writers} leaves out 'jsonl'; metrics.jsonl is the "
                      "record resume and the evaluation tools read: expected it in the list")
  if logging.histograms_every < 0:
    raise ConfigError(f"logging.histograms_every={logging.histograms_every}; expected 0 (off) "
                      "or a number of steps")
  w = logging.wandb
  if w.mode not in WANDB_MODES:
    raise ConfigError(f"logging.wandb.mode={w.mode!r}; expected one of {list(WANDB_MODES)}")
  if not isinstance(w.tags, (tuple, list)) or not all(isinstance(t, str) for t in w.tags):
    raise ConfigError(f"logging.wandb.tags={w.tags!r}; expected a tuple of strings")
  if not re.fullmatch(r"[\w.\-]+", w.project):
    raise ConfigError(f"logging.wandb.project={w.project!r}; expected letters, digits, '_', "
                      "'-' or '.'")
  norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
  changed = sorted(k for k, v in w.items() if norm(v) != norm(defaults().wandb[k]))
  if changed and "wandb" not in writers:
    raise ConfigError(f"logging.wandb.{changed[0]}={w[changed[0]]!r} is set but logging.writers="
                      f"{writers} has no 'wandb'; expected 'wandb' in logging.writers")
  if logging.histograms_every and writers == ("jsonl",):
    raise ConfigError(f"logging.histograms_every={logging.histograms_every} with logging.writers="
                      f"{writers}: metrics.jsonl holds no histograms; expected 'tensorboard' or "
                      "'wandb' in logging.writers")
  if "wandb" in writers:
    try:
      import wandb  # noqa: F401
    except ImportError:
      raise ConfigError("logging.writers includes 'wandb' but the wandb package is not "
                        "installed: pip install -e '.[wandb]'") from None


class Wandb:
  """A W&B run that takes the records `MetricWriter` writes; `settings`: `logging.wandb`.

  A run whose workdir holds WORKDIR/wandb_run.json (a resumed one) continues the W&B run of that
  file. Records at steps up to `last_step` (the last step the interrupted run wrote to
  metrics.jsonl) are not sent again: W&B keeps a run's steps increasing, and a resumed run
  recomputes those steps bit for bit. W&B writes from its own process; what the interrupted run
  had handed it and it had not yet written is lost from the W&B run alone.
  """

  def __init__(self, workdir: str, settings: dict[str, Any], run_config: dict[str, Any],
               last_step: int):
    import wandb

    path = os.path.join(workdir, WANDB_RUN)
    saved = files.read_json(path) if os.path.exists(path) else None  # never overwritten
    run_id = saved["id"] if saved else "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's form
    if saved is None:
      files.write_json_atomic(path, {"id": run_id, "project": settings["project"]})
    self._skip = last_step if saved else 0
    try:
      self._run = wandb.init(
          project=settings["project"], entity=settings["entity"] or None, id=run_id,
          resume="allow", name=settings["name"] or os.path.basename(os.path.abspath(workdir)),
          tags=list(settings["tags"]), mode=settings["mode"], dir=workdir, config=run_config,
          settings=wandb.Settings(silent=True, console="off"))
    except Exception as e:  # wandb's UsageError, CommError, ...: a setting or the network
      raise ConfigError(f"logging.writers includes 'wandb' and W&B could not start run {run_id} "
                        f"(logging.wandb.mode={settings['mode']!r}): {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''}; mode 'offline' "
                        "needs no account or network") from None
    self.id = run_id

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if step > self._skip:
      self._run.log({k: float(v) for k, v in values.items()}, step=int(step))

  def histograms(self, step: int, values: dict[str, dict[str, Any]]) -> None:
    import wandb

    if step > self._skip:
      self._run.log({tag: wandb.Histogram(np_histogram=(h["counts"], h["edges"]))
                     for tag, h in values.items()}, step=int(step))

  def image(self, step: int, tag: str, png: bytes) -> None:
    import io

    import wandb
    from PIL import Image

    if step > self._skip:
      self._run.log({tag: wandb.Image(Image.open(io.BytesIO(png)))}, step=int(step))

  def close(self) -> None:
    self._run.finish()
