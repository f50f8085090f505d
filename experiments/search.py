"""Hyper-parameter and architecture search with early stopping, on an Optuna study in a database.

  python -m experiments.search --config experiments/mnist1d_cnn.py \
      --space '$depth=[2,3,4]; model.features=each($depth,[12,25,50]);
               model.kernel_sizes=each($depth,[3,5]); optim.learning_rate=loguniform(1e-3,3e-2)' \
      --trials 30 --sampler tpe --pruner asha --workdir runs/search_cnn \
      --config.data.train_split='train[:3500]' --config.data.eval_split='train[3500:]'

Each trial is an ordinary run in WORKDIR/trials/trial_NNNN; its evaluations (every
`train.eval_every` steps on `data.eval_split`: keep the test split out of a search) go to the
study as they happen, so `--pruner asha` (asynchronous successive halving) or `hyperband` can stop
it early. The study lives in WORKDIR/study.db (SQLite) unless `--storage` names another database:
more workers, on this machine (`--workers N`) or on others (`--storage postgresql://...`, each
with its own `--worker_index`, so that their samplers draw different points), share it. Pruned
and failed trials stay in the study and on disk; a trial whose worker died is queued again and
resumes from its checkpoints; the same command continues a stopped search. The space's grammar
is in `experiments/search_space.py`.

Writes WORKDIR/results.md, .csv, .json (every trial, the best point and the command that reruns
it, fANOVA parameter importances, best value against training steps spent) and results.png.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import flags

from train import cli, huge_pages
from train import config as config_lib
from train.errors import FlagError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("config", None, "Experiment file or module (experiments/X.py[:arg]); "
                      "--config.SECTION.FIELD=VALUE fixes a field for every trial.")
  flags.DEFINE_string("space", None, "The search space: NAME=CHOICE items, ';'-separated "
                      "(experiments/search_space.py).")
  flags.DEFINE_integer("trials", 20, "Trials to finish (completed, pruned or failed); a grid "
                       "runs its every point instead.")
  flags.DEFINE_integer("max_steps", 0, "Also stop once the trials have trained this many steps "
                       "in all (equal-compute comparisons); 0 = no budget.")
  flags.DEFINE_enum("sampler", "tpe", ["tpe", "random", "grid"], "How points are chosen.")
  flags.DEFINE_enum("pruner", "none", ["asha", "hyperband", "none"], "Early stopping of trials.")
  flags.DEFINE_integer("min_resource", 0, "Pruners: steps before the first rung (default "
                       "train.eval_every).")
  flags.DEFINE_integer("reduction_factor", 3, "Pruners: 1/rate of trials promoted per rung.")
  flags.DEFINE_integer("seed", 0, "The sampler's seed.")
  flags.DEFINE_string("metric", None, "Evaluation metric to optimise (default accuracy for "
                      "supervised experiments, else loss); maximised when accuracy-like.")
  flags.DEFINE_string("workdir", None, "Search directory (default runs/search_<name>).")
  flags.DEFINE_string("storage", "", "Study database URL (default sqlite:///WORKDIR/study.db); "
                      "postgresql://... or mysql://... for workers on several machines.")
  flags.DEFINE_string("study_name", "", "Study name in the database (default the workdir's).")
  flags.DEFINE_integer("workers", 1, "Worker processes on this machine sharing the study.")
  flags.DEFINE_integer("worker_index", 0, "This worker's index among all sharing the study "
                       "(its sampler's own seed): give each machine's command its own, e.g. "
                       "$SLURM_ARRAY_TASK_ID * WORKERS; --workers N numbers its processes on.")
  flags.DEFINE_integer("heartbeat", 10, "Seconds between a running trial's heartbeats.")
  flags.DEFINE_integer("grace", 60, "Seconds without a heartbeat before a trial's worker is "
                       "taken for dead and the trial is queued to resume.")
  flags.DEFINE_bool("collect", False, "Run nothing: write the tables of the study as it is.")
  flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "strata", "xla"),
                      "Persistent XLA compilation cache directory; '' disables it.")
  flags.mark_flags_as_required(["config", "space"])


def make_search(overrides: dict[str, str]):
  from experiments import search_study as search_lib

  config = config_lib.from_command_line(FLAGS.config, overrides)
  name = config_lib.experiment_name(FLAGS.config)
  metric = FLAGS.metric or ("accuracy" if config.paradigm == "supervised" else "loss")
  return search_lib.Search(
      config=config, config_arg=FLAGS.config, space=FLAGS.space,
      workdir=FLAGS.workdir or os.path.join("runs", f"search_{name}"), metric=metric,
      sampler=FLAGS.sampler, pruner=FLAGS.pruner, trials=FLAGS.trials,
      max_steps=FLAGS.max_steps, seed=FLAGS.seed, storage=FLAGS.storage,
      study_name=FLAGS.study_name, min_resource=FLAGS.min_resource,
      reduction_factor=FLAGS.reduction_factor, heartbeat=FLAGS.heartbeat, grace=FLAGS.grace,
      overrides=dict(overrides), worker=FLAGS.worker_index)


def main(argv: list[str], overrides: dict[str, str]) -> None:
  from experiments import search_results
  from experiments import search_study as search_lib
  from train import compilation_cache, progress

  if FLAGS.workers < 1:
    raise FlagError(f"--workers={FLAGS.workers}; expected 1 or more")
  search = make_search(overrides)
  if FLAGS.collect:
    study = search_lib.open_study(search, create=False)
    print(search_results.write(search, study))
    return
  huge_pages.restart_for([search.config], __spec__)  # train.huge_pages, before anything runs
  compilation_cache.use_compilation_cache(FLAGS.compilation_cache)
  search_lib.open_study(search)  # created once, before the other workers open it
  # the other processes of --workers N: they run trials; this one writes the tables
  child = dict(os.environ, STRATA_SEARCH_CHILD="1")
  others = [subprocess.Popen([sys.executable, "-m", "experiments.search", *sys.argv[1:],
                              "--workers=1", f"--worker_index={FLAGS.worker_index + i}"],
                             env=child) for i in range(1, FLAGS.workers)]
  try:
    search_lib.work(search)
  except search_lib.Preempted as e:  # a signal: the trial has its checkpoint; exit 0 as a run
    progress.console(f"[search] stopped: {e}; the same command continues the search")
    return
  finally:
    codes = [p.wait() for p in others]
  if os.environ.get("STRATA_SEARCH_CHILD"):
    return
  if any(codes):  # work() returned: the study is done, their trials resumed by this worker
    progress.console(f"[search] {sum(bool(c) for c in codes)} of the other workers ended with "
                     f"exit codes {codes}; their unfinished trials were resumed")
  study = search_lib.open_study(search)
  text = search_results.write(search, study)
  progress.console(f"[search] tables in {search.url or search.workdir}/results.*")
  print(text)


if __name__ == "__main__":
  define_flags()
  args, config_items = cli.config_overrides(sys.argv)
  cli.run(lambda argv: main(argv, config_items), argv=args)
