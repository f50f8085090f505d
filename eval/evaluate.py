"""Runs a trained run's evaluators (`config.evals`, train/evaluators.py) on its checkpoint: the
same evaluators, with the same settings, that ran during training.

  python -m eval.evaluate --workdir runs/digits_dcgan
  python -m eval.evaluate --workdir runs/mnist1d_cnn --evals probe --step 4000 \
      --set evals.probe.shots='(1, 5, 10)'

prints one JSON line per evaluation, {"step", "split": NAME, metrics...}, as metrics.jsonl holds
them, and writes nothing. An evaluator's settings change with `--set evals.NAME.FIELD=VALUE`;
one a run did not have is added with `--add NAME='{"type": "fewshot", "shots": [10]}'`.
"""

from __future__ import annotations

import json
from typing import Any

from absl import flags

from eval import restore
from train import cli, config_fields, paradigm_eval, remote_workdir
from train import evaluators as evaluators_lib
from train.errors import FlagError

FLAGS = flags.FLAGS


def evaluate(workdir: str, names: list[str] | None = None, step: int | None = None,
             overrides: dict[str, str] | None = None,
             added: dict[str, dict[str, Any]] | None = None
             ) -> tuple[int, dict[str, dict[str, float]]]:
  """(the checkpoint's step, {NAME: metrics}) of the evaluations `names` (default every one of
  `config.evals`) of the run in `workdir` at its newest checkpoint (or `step`).

  Raises:
    CheckpointError: nothing to restore.
    FlagError: a name the run's config.evals does not have, or a bad override.
  """
  run = restore.restore(workdir, step=step)
  config = run.config
  with config.unlocked():
    for name, section in (added or {}).items():
      config.evals[name] = section
    for key, value in (overrides or {}).items():
      where = f"--set {key}={value}"
      old = config_fields.get_field(config, key, where)
      config_fields.set_field(config, key, config_fields.parse_value(old, value), where)
  chosen = names or list(config.evals.keys())
  unknown = [n for n in chosen if n not in config.evals]
  if unknown:
    raise FlagError(f"--evals={','.join(chosen)}: {workdir} has no evaluation(s) {unknown}; "
                    f"its config.evals has {list(config.evals.keys())} (--add one)")
  built_in = [n for n in chosen
              if evaluators_lib.type_of(config.evals[n]) == evaluators_lib.BUILT_IN]
  # the training data's normalisation, computed once for the "paradigm" evaluations
  stats = paradigm_eval.training_stats(config) if built_in else None
  out = {}
  for name in chosen:
    section = config.evals[name]
    if name in built_in:
      out[name] = paradigm_eval.ParadigmEval(name, section, run, stats)(run.state)
    else:
      out[name] = evaluators_lib.build(name, section, run)(run.state)
  return run.step, out


def main(argv: list[str]) -> None:
  added = {}
  for item in FLAGS.add or []:
    name, sep, text = item.partition("=")
    try:
      added[name] = json.loads(text)
    except json.JSONDecodeError as e:
      raise FlagError(f"--add {item!r}: expected NAME='{{JSON section}}' ({e})") from None
    if not sep or not isinstance(added[name], dict):
      raise FlagError(f"--add {item!r}: expected NAME='{{\"type\": ...}}'")
  names = [n for n in (FLAGS.evals or "").split(",") if n]
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    step, results = evaluate(workdir, names or None, FLAGS.step,
                             config_fields.parse_sets(FLAGS.set), added)
  for name, metrics in results.items():
    print(json.dumps({"step": step, "split": name, **metrics}))


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A trained run's directory.")
  flags.DEFINE_string("evals", "", "Comma-separated names of config.evals (default: all).")
  flags.DEFINE_integer("step", None, "The checkpoint step (default: the newest).")
  flags.DEFINE_multi_string("set", [], "evals.NAME.FIELD=VALUE: change an evaluator's field.")
  flags.DEFINE_multi_string("add", [], "NAME='{JSON}': an evaluation the run did not have.")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
