"""Reproduces a results table the project tracks: every row's experiment over several seeds,
ours (mean ± sd) beside the published figure.

  python -m experiments.reproduce mnist1d [--seeds 3] [--workdir runs/reproduce]
  python -m experiments.reproduce charlm --seeds 1
  python -m experiments.reproduce mnist1d --tiny --seeds 1     # each row's tiny mode: a smoke run

Runs go to WORKDIR/<table>/<experiment>/seed_<s> through `experiments.sweep_runs` (finished runs are skipped,
interrupted ones resume); the table is printed and written to WORKDIR/<table>/results.md, .csv and
.json. Tables: `mnist1d` (the MNIST-1D paper's Table 1: logistic regression, MLP, CNN, GRU, and
our Transformer) and `charlm` (the character LMs on pydoc_text).
"""

from __future__ import annotations

import dataclasses
import os

from absl import app, flags

from train import cli, huge_pages

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Row:
  label: str
  experiment: str            # experiments/<experiment>.py
  published: float | None    # the figure in the table's source, in the table's units


@dataclasses.dataclass(frozen=True)
class Table:
  title: str
  metric: str                # a final-evaluation metric of summary.json
  scale: float               # metric -> the table's units
  unit: str
  source: str
  rows: tuple[Row, ...]


TABLES = {
    "mnist1d": Table(
        "MNIST-1D: test accuracy", "accuracy", 100.0, "%",
        "Greydanus & Kobak, Scaling down deep learning with MNIST-1D (ICML 2024)",
        (Row("logistic regression", "mnist1d_logreg", 32.0),
         Row("MLP", "mnist1d_mlp", 68.0),
         Row("CNN", "mnist1d_cnn", 94.0),
         Row("GRU", "mnist1d_gru", 91.0),
         Row("Transformer (ours; not in the paper)", "mnist1d_transformer", None))),
    "charlm": Table(
        "Character LMs on pydoc_text: validation bits per character", "bits_per_token", 1.0,
        " bits", "this project (no published figure); same parameters and steps for both",
        (Row("LSTM", "charlm_lstm", None),
         Row("Transformer", "charlm_transformer", None))),
}


def reproduce(name: str, seeds: int, workdir: str, tiny: bool = False,
              only: list[str] | None = None, data_dir: str | None = None,
              log=print) -> tuple[list[dict], str]:
  """Runs table `name`'s rows (what is not finished) and returns (rows, Markdown)."""
  from experiments import sweep_results
  from experiments import sweep_runs as sweep
  from train import config as config_lib
  from train import files

  if name not in TABLES:
    raise config_lib.ConfigError(f"table {name!r}: expected one of {sorted(TABLES)}")
  table = TABLES[name]
  rows = [r for r in table.rows if not only or r.experiment in only]
  unknown = sorted(set(only or ()) - {r.experiment for r in table.rows})
  if unknown:
    raise config_lib.ConfigError(f"--only {unknown}: not in table {name!r}; expected some of "
                                 f"{[r.experiment for r in table.rows]}")
  out = os.path.join(os.path.abspath(workdir), name)
  plans = []
  for row in rows:  # every config is built and validated before the first run
    config = config_lib.load(
        os.path.join(EXPERIMENTS, f"{row.experiment}.py") + (":tiny" if tiny else ""))
    if data_dir:
      config.data.data_dir = data_dir
    plans.append(sweep.plan(config, [], os.path.join(out, row.experiment), seeds))
  for row, runs in zip(rows, plans):
    log(f"[reproduce] {name}: {row.label} ({row.experiment}), {seeds} seed(s)")
    sweep.execute(runs, log=log)
  results = []
  for row, runs in zip(rows, plans):
    (stats,) = sweep_results.aggregate(runs)
    results.append({"label": row.label, "experiment": row.experiment,
                    "published": row.published, **stats})
  text = markdown(table, results, tiny)
  files.write_json_atomic(os.path.join(out, "results.json"), {
      "table": name, "title": table.title, "source": table.source, "metric": table.metric,
      "seeds": seeds, "tiny": tiny, "rows": results})
  files.write_text_atomic(os.path.join(out, "results.md"), text + "\n")
  return results, text


def markdown(table: Table, results: list[dict], tiny: bool) -> str:
  from experiments import sweep_results

  n = max((r["finished"] for r in results), default=0)
  lines = [f"{table.title}{' (TINY MODE: smoke runs, not results)' if tiny else ''}", "",
           f"| model | ours, mean ± sd over {n} seed(s) | per seed | published | "
           "time per run |", "|---|---|---|---|---|"]
  for r in results:
    stat = r["metrics"].get(table.metric)
    digits = 1 if table.scale == 100 else 3
    per_seed = " ".join(f"{v * table.scale:.{digits}f}" for v in stat["values"]) if stat else "–"
    published = "–" if r["published"] is None else f"{r['published']:g}{table.unit}"
    mean = sweep_results.mean_std(stat, table.scale, digits)
    lines.append(f"| {r['label']} | {mean}{table.unit if stat else ''} | {per_seed} | "
                 f"{published} | {r['wall_time_s']:.1f} s |")
  lines += ["", f"Published figures: {table.source}."]
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_integer("seeds", 3, "Seeds per row: config.seed + 0 .. seeds - 1.")
  flags.DEFINE_string("workdir", os.path.join("runs", "reproduce"),
                      "Runs go to WORKDIR/<table>/<experiment>/seed_<s>.")
  flags.DEFINE_bool("tiny", False, "Each experiment's tiny mode (a smoke run).")
  flags.DEFINE_list("only", None, "Run only these experiments of the table.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default the config's).")
  flags.DEFINE_string("compilation_cache", os.path.join("~", ".cache", "strata", "xla"),
                      "Persistent XLA compilation cache directory; '' disables it.")


def main(argv: list[str]) -> None:
  from train import compilation_cache, progress

  if len(argv) != 2:
    raise app.UsageError(f"expected one table name, one of {sorted(TABLES)}; got {argv[1:]}")
  if argv[1] in TABLES:  # (reproduce refuses another in one line) train.huge_pages, before runs
    from train import config as config_lib

    huge_pages.restart_for([config_lib.load(os.path.join(EXPERIMENTS, f"{r.experiment}.py"))
                            for r in TABLES[argv[1]].rows
                            if not FLAGS.only or r.experiment in FLAGS.only], __spec__)
  compilation_cache.use_compilation_cache(FLAGS.compilation_cache)
  _, text = reproduce(argv[1], FLAGS.seeds, FLAGS.workdir, FLAGS.tiny, FLAGS.only,
                      FLAGS.data_dir, log=progress.console)
  print(text)


if __name__ == "__main__":
  define_flags()
  cli.run(main, positional=True)
