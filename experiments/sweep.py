"""Runs an experiment over a grid or a random sample of config values and several seeds.

  python -m experiments.sweep --config experiments/mnist1d_mlp.py \
      --sweep 'optim.learning_rate=[1e-3,3e-3,1e-2];model.features=[(100,100),(200,200)]' \
      --seeds 3 --workdir runs/sweep_mlp
  python -m experiments.sweep --config experiments/mnist1d_cnn.py \
      --sweep 'optim.learning_rate=loguniform(1e-4,1e-1);optim.name=[adam,adamw]' --samples 8

Each (point, seed) trains in WORKDIR/<field=value,...>/seed_<s>; finished runs are skipped and
interrupted ones resume, so a killed sweep restarted with the same command runs only what is
missing. Across machines, `--shard I/N` runs every N-th run from I (a SLURM job array, a Kubernetes
indexed Job; docs/pods.md), and `--collect` (or the same command without `--shard`, which runs
anything still missing) writes the combined tables. `--workdir gs://...` runs the sweep in a local
copy uploaded as it goes (train/remote_workdir.py; one job, no `--shard`). `--config.FIELD=VALUE`
fixes a field for every point. Writes WORKDIR/results.csv, results.md (mean ± sd over seeds of each
final evaluation metric), results.json and results.png (the `--metric` against the first swept
field). The spec's grammar is in `experiments/sweep_runs.py`. A bad spec (unknown field, empty list,
wrong type) fails before any run.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from train import cli, huge_pages
from train import config as config_lib
from train.errors import FlagError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string(
      "config", None, "Experiment file or module, optionally with an argument: "
      "experiments/X.py:tiny. --config.SECTION.FIELD=VALUE fixes a field for every point.")
  flags.DEFINE_string(
      "sweep", "", "FIELD=[V1,V2,...];FIELD=... (grid), or with --samples also "
      "FIELD=uniform(a,b)|loguniform(a,b)|randint(a,b). Empty: seeds only.")
  flags.DEFINE_integer("seeds", 1, "Seeds per point: config.seed + 0 .. seeds - 1.")
  flags.DEFINE_integer("samples", 0, "Random search: this many points; 0 = the grid.")
  flags.DEFINE_integer("sample_seed", 0, "Random search: the sampler's seed.")
  flags.DEFINE_string("workdir", None, "Sweep directory (default runs/sweep_<name>).")
  flags.DEFINE_string("metric", None, "Final-evaluation metric plotted and ranked "
                      "(default accuracy, else bits_per_token, neg_elbo or loss).")
  flags.DEFINE_bool("dry_run", False, "List the runs and their status; run nothing.")
  flags.DEFINE_string("shard", None, "I/N: run only the I-th of N disjoint parts (0 <= I < N; "
                      "every N-th run from I), e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. "
                      "Tables cover every finished run of the sweep.")
  flags.DEFINE_bool("collect", False, "Run nothing: write the tables of the runs finished so "
                    "far (after the shards of a job array).")
  flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "strata", "xla"),
                      "Persistent XLA compilation cache directory; '' disables it.")
  flags.mark_flags_as_required(["config"])


def main(argv: list[str], overrides: dict[str, str]) -> None:
  from experiments import sweep_runs as sweep_lib
  from train import files, remote_workdir

  config_arg = FLAGS.config
  config = config_lib.from_command_line(config_arg, overrides)
  huge_pages.restart_for([config], __spec__)  # train.huge_pages: once, before anything runs
  name = config_lib.experiment_name(config_arg)
  url = FLAGS.workdir if remote_workdir.is_remote(FLAGS.workdir) else ""
  files.check_directory(None if url else FLAGS.workdir, "--workdir")
  axes = sweep_lib.parse_spec(FLAGS.sweep)
  if not url:
    run_sweep(config, config_arg, axes,
              os.path.abspath(FLAGS.workdir or os.path.join("runs", f"sweep_{name}")))
    return
  if FLAGS.shard:  # each shard's job would mirror, lock and upload the whole sweep
    raise FlagError(f"--shard with --workdir={url}: shards of a sweep in object storage are not "
                    "supported; run it as one job, or shard onto a shared file system")
  with remote_workdir.local_workdir(url) as workdir:  # one local copy of the sweep, uploaded
    run_sweep(config, config_arg, axes, workdir, shown=url)


def run_sweep(config, config_arg: str, axes, workdir: str, shown: str = "") -> None:
  """Plans, runs (or with --dry_run lists) and tabulates the sweep in the local `workdir`
  (`shown`: how the summary names it, default `workdir`)."""
  from experiments import sweep_results
  from experiments import sweep_runs as sweep_lib
  from train import compilation_cache, files, progress

  runs = sweep_lib.plan(config, axes, workdir, FLAGS.seeds, FLAGS.samples,
                        FLAGS.sample_seed)
  mine = runs
  if FLAGS.shard:
    if FLAGS.collect:
      raise FlagError("--shard and --collect go apart: shards run, a collect step writes tables")
    mine = sweep_lib.shard(runs, *sweep_lib.parse_shard(FLAGS.shard))
  for run in mine if FLAGS.dry_run else []:
    print(f"{run.status:9s} {run.workdir}")
  if FLAGS.dry_run:
    return
  compilation_cache.use_compilation_cache(FLAGS.compilation_cache)
  os.makedirs(workdir, exist_ok=True)
  command = {"config": config_arg, "sweep": FLAGS.sweep, "seeds": FLAGS.seeds,
             "samples": FLAGS.samples, "sample_seed": FLAGS.sample_seed,
             "points": [r.point for r in runs[::FLAGS.seeds]]}
  files.write_json_atomic(os.path.join(workdir, "sweep.json"), command)
  counts = ({"ran": 0, "skipped": len(runs), "diverged": 0} if FLAGS.collect else
            sweep_lib.execute(mine, log=progress.console))
  rows = sweep_results.aggregate(runs)
  metric = FLAGS.metric or sweep_results.default_metric(rows)
  text = sweep_results.write_tables(rows, [a.field for a in axes], workdir, metric,
                                extra={"command": command})
  progress.console(f"[sweep] ran {counts['ran']}, skipped {counts['skipped']} finished, "
                   f"{counts['diverged']} diverged; tables in {shown or workdir}/results.*")
  print(text)


if __name__ == "__main__":
  define_flags()
  args, config_items = cli.config_overrides(sys.argv)
  cli.run(lambda argv: main(argv, config_items), argv=args)
