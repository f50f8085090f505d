"""The paradigm-agnostic training loop.

    train_and_evaluate(config, workdir)

validates the config, builds the data pipelines, the model and the paradigm's step functions,
jit-compiles them over a ("data", "fsdp", "tensor") mesh, resumes from the workdir's latest complete
checkpoint (train state and data iterator together) or initialises, then trains, logging every
`train.log_every` steps, evaluating every `train.eval_every`, checkpointing every
`train.checkpoint_every`, and once more of each at the end.

Randomness: one base key from `config.seed`; the init key and the step key are split from it and
each step folds in its step number, so a resumed run draws the numbers an uninterrupted one does.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections as mlc
import numpy as np

import data as data_lib
from train import checkpoint as checkpoint_lib
from train import device_prefetch as device_prefetch_lib
from train import (
  figures,
  files,
  histograms,
  lineage,
  memory,
  metric_writer,
  paradigms,
  parallel,
  profiling,
  progress,
  resumable,
  signals,
  throughput,
  transfer,
  watchdog,
  workdir_lock,
  workdir_records,
)
from train import goodput as goodput_lib
from train import preemption as preemption_lib
from train.errors import CheckpointError, NonFiniteLossError
from train.run import (  # noqa: F401  (re-exported: tools build runs through the loop)
  Run,
  Settings,
  abstract_batch,
  build,
  compile_train_step,
  prepare,
  scan_cost_factors,
)


def _window_metrics(window: list[jax.Array], names: list[str]) -> dict[str, np.ndarray]:
  """Per-step metrics of a logging window: name -> (steps,) float64 on the host."""
  host = np.asarray(jax.device_get(window), np.float64).reshape(len(window), len(names))
  return {k: host[:, i] for i, k in enumerate(names)}


def _write_grid(samples: jax.Array, workdir: str, step: int, final: bool, enabled: bool,
                writer: metric_writer.MetricWriter) -> None:
  """A generative paradigm's fixed-latent samples as WORKDIR/samples/step_XXXXXXXX.png (and
  final.png after the last step), and as the image "samples" to `writer`'s other writers."""
  if not enabled:
    return
  samples = np.asarray(jax.device_get(samples))
  if not len(samples):
    return
  for name in [f"step_{step:08d}.png"] + (["final.png"] if final else []):
    figures.sample_grid(samples, os.path.join(workdir, "samples", name), title=f"step {step}")
  writer.image(step, "samples", os.path.join(workdir, "samples", f"step_{step:08d}.png"))


def evaluate(eval_step, state, pipeline: data_lib.Pipeline, sharding, rng,
             device_prefetch: int = 0,
             should_stop: Callable[[], bool] | None = None) -> dict[str, float] | None:
  """One pass over an evaluation pipeline; sums merge across batches, then divide. Batch `i`
  gets the key `fold_in(rng, i)` (a VAE's posterior samples differ from batch to batch);
  `device_prefetch` batches are sent to the devices ahead. Returns None, having stopped between
  batches, once `should_stop()` is true (a preemption notice)."""
  totals: dict[str, float] = {}
  batches = device_prefetch_lib.DevicePrefetch(pipeline.iterator(), device_prefetch, sharding)
  try:
    for i, batch in enumerate(batches):
      if i == 1 and should_stop is not None:  # tests: a signal between two batches
        signals.pause("evaluation", should_stop)
      if should_stop is not None and should_stop():
        return None
      sums = jax.device_get(eval_step(state, batch, jax.random.fold_in(rng, i)))
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
  finally:
    batches.close()  # a streaming pipeline's worker processes
  return paradigms.reduce_eval(totals)


def train_and_evaluate(config: mlc.ConfigDict, workdir: str, dry_run: bool = False,
                       on_eval: Callable[[int, str, dict[str, float]], None] | None = None,
                       restart: bool = False) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns final eval metrics.
  A finished run is not run again (its summary's final evaluation is returned); records that a
  start would overwrite are refused, or with `restart` moved aside first (train/workdir_records).

  `on_eval(step, name, metrics)` is called after each evaluation is recorded ("eval" for
  `data.eval_split`, else the `config.evals` name); an exception it raises (a search pruning the
  run) ends the run there, its records and earlier checkpoints kept.

  Raises:
    ConfigError, DataError, ValueError: invalid config, data or model, before any compute.
    CheckpointError: the workdir has checkpoints and none restores.
    NonFiniteLossError: the loss became NaN/inf; names the step and the last good checkpoint.
  """
  t_start = time.perf_counter()
  files.check_directory(workdir, "--workdir")
  workdir = os.path.abspath(workdir)
  run, settings = prepare(config)
  signals.check("compiling")  # a SIGTERM/SIGINT so far (train.signals): stop, nothing to save
  # One writer per workdir (train/workdir_lock.py), taken before the first compile: a second run
  # on it is refused before it compiles or writes anything. A dry run writes nothing; in a
  # multi-process job process 0 holds it for the job.
  existed = os.path.exists(workdir)
  with workdir_lock.hold_for_job(workdir, enabled=not dry_run, remove=not existed):
    try:
      return _train(config, workdir, run, settings, t_start, dry_run, on_eval, restart)
    except OSError as e:  # a full disk, a file-size limit, a read-only mount: one line, status 5
      raise CheckpointError(_storage_failure(e, workdir)) from e


def _storage_failure(error: OSError, workdir: str) -> str:
  """The one line for a write that failed in `workdir`: what, where, and what resumes."""
  saved = checkpoint_lib.saved_steps(files.checkpoints_dir(workdir))
  where = f" ({error.filename})" if error.filename else ""
  then = (f"run the same command: it resumes from the last complete checkpoint, step {saved[-1]}"
          if saved else "run the same command with --restart: no checkpoint was complete")
  return (f"writing to --workdir={workdir} failed: {error.strerror or error}{where}; free space "
          f"there (or raise the file-size limit), then {then}")


def _train(config: mlc.ConfigDict, workdir: str, run: Run, settings: Settings, t_start: float,
           dry_run: bool, on_eval: Callable[[int, str, dict[str, float]], None] | None,
           restart: bool) -> dict[str, float]:
  """`train_and_evaluate` once the run is built and the workdir is held."""
  is_main = jax.process_index() == 0
  pc = jax.process_count()
  d = config.data
  mesh, train_pipe, eval_pipe, paradigm = run.mesh, run.train_pipe, run.eval_pipe, run.paradigm
  steps, devices, names = run.steps, mesh.devices.size, run.names
  batch_sharding, state_sharding = run.batch_sharding, run.state_sharding
  step_rng, eval_step = run.step_rng, run.eval_step
  if not restart:  # --restart moves the old config aside with the rest
    resumable.check(workdir, config)
  if not dry_run:  # every process reads the same files; process 0 alone moves them
    finished = workdir_records.check(workdir, steps, restart, move=is_main)
    if finished is not None:
      progress.console(f"{workdir} holds a finished run ({steps} steps, {files.SUMMARY}); nothing "
                       "to do: raise train.steps to train on, or use another --workdir")
      return dict(finished.get("final_eval") or {})
  # Compiled ahead of time, once: its cost analysis gives the FLOPs of a step, and its memory
  # analysis whether it fits, before anything is written to the workdir.
  # A signal during the compile stops the run at once (train.signals.while_compiling).
  good = goodput_lib.Goodput()  # where the wall time goes, in every train record
  with good.phase("compile"):
    train_step, factors = signals.while_compiling(
        lambda: (compile_train_step(run), scan_cost_factors(run)))
  speed = throughput.for_run(train_step, run.example, config.train.precision, factors["flops"])
  usage = memory.report(run.abstract, memory.device_bytes(abstract_batch(run)), train_step)
  limit, source = memory.device_limit(settings.memory_limit_gb)
  progress.console(memory.line(usage, limit, source))
  if settings.huge_pages_note:
    progress.console(settings.huge_pages_note)
  memory.check(usage, limit, source, config)
  if dry_run:
    progress.console(f"dry run: {config.model.name}, {speed.flops_per_step / 1e9:.3g} GFLOP a "
                     "step per device; nothing trained or written")
    return {}
  signals.check("writing to the workdir")

  os.makedirs(workdir, exist_ok=True)
  signals.stacks_into(workdir)  # SIGUSR1's stack dumps
  run_lineage = {"dataset": data_lib.describe(train_pipe),
                 "code_version": lineage.code_version(), "code": lineage.code_lineage(),
                 "libraries": lineage.library_versions(), "devices": devices,
                 "platform": jax.default_backend(), "processes": pc}
  if is_main:
    files.write_json_atomic(os.path.join(workdir, files.CONFIG),
                            json.loads(config.to_json_best_effort()))

  iterator = device_prefetch_lib.DevicePrefetch(train_pipe.iterator(prefetch=settings.prefetch),
                                           settings.device_prefetch, batch_sharding)
  ckpt = checkpoint_lib.Checkpointer(files.checkpoints_dir(workdir),
                                     settings.keep_checkpoints,
                                     keep_every=settings.keep_every)
  with good.phase("checkpoint"):
    restored = ckpt.restore_latest(run.abstract, iterator)
  pending: list[str] = []  # evaluations of the last saved step that a stop request cut short
  if restored is None:
    state = run.init_state()
    start = 0
    if settings.init_from is not None:
      state, copied = transfer.initialize_from(state, config.init_from, state_sharding,
                                               config.model.to_dict())
      if is_main:
        files.write_json_atomic(os.path.join(workdir, "init_from.json"), copied)
      for line in copied["unused"]:
        progress.console(f"init_from: unused {line}")
      progress.console(f"initialised {len(copied['parameters'])} parameter arrays from "
                       f"{copied['source']} (step {copied['step']}); "
                       f"{len(copied['kept_initialisation'])} keep their random initialisation")
  else:
    state, meta = restored
    start, pending = int(meta["step"]), list(meta.get("pending_evals", []))
    # an evaluation that a changed config no longer has is not run
    pending = [n for n in pending if n == "eval" or n in run.evals or n in run.evaluators]
    progress.console(f"resumed from {ckpt.directory}/{start}")
  if is_main:  # one entry per run segment, the earlier ones kept
    lineage.add_segment(os.path.join(workdir, files.LINEAGE), run_lineage, start)
  # A first step that never ends (a collective waiting for a process that never comes): one
  # line and exit status 1 after train.first_step_timeout_secs (train/watchdog.py).
  first = watchdog.Watchdog(settings.first_step_timeout_secs,
                            f"the first step (process {jax.process_index()} of {pc})", workdir)
  first.__enter__()
  try:
    signals.check("the first step")
  except signals.Stopped:
    first.cancel()
    iterator.close()
    ckpt.close()
    raise
  sample_grid = run.sample_grid

  try:  # a W&B run that cannot start: one line, and nothing left running
    writer = metric_writer.MetricWriter(
        workdir, resume_step=start, enabled=is_main, logging_config=settings.logging,
        run_config={"config": json.loads(config.to_json_best_effort()), "lineage": run_lineage})
  except Exception:
    first.cancel()
    iterator.close()
    ckpt.close()
    raise
  histogram_tags, histograms_every = run.histogram_tags, settings.logging["histograms_every"]
  bar = progress.Progress(steps, start)
  # the paradigm's own metrics and the learning rate; an evaluator's line shows all of its own
  own = getattr(paradigms.get(config.paradigm), "CONSOLE_METRICS", None)  # None: all
  shown = None if own is None else (*own, "learning_rate")
  accum = settings.grad_accum_steps
  window: list[Any] = [] if restored is None else [  # per-step packed metrics not yet written
      np.asarray(row, np.float32) for row in restored[1].get("window", [])]
  window_start = start if restored is None else int(restored[1].get("window_start", start))
  last_eval: dict[str, float] = {}
  progress.console(f"training {config.model.name} on {d.source} for {steps} steps "
                   f"({devices} device(s), {pc} process(es)) in {workdir}")

  def flush(step: int) -> None:
    nonlocal window, window_start
    if not window:
      return
    means = _window_metrics(window, names)
    bad = np.flatnonzero(~np.isfinite(means["loss"]))
    if bad.size:
      bad_step = window_start + int(bad[0]) + 1
      last = ckpt.latest_step()
      where = (f"the last good checkpoint is step {last} in {ckpt.directory}" if last is not None
               else "no checkpoint was written before it")
      raise NonFiniteLossError(
          f"loss is {means['loss'][bad[0]]} at step {bad_step}; training stopped and nothing "
          f"after step {window_start} was saved; {where}")
    metrics = {k: float(v.mean()) for k, v in means.items()}
    metrics["learning_rate"] = float(paradigm.schedule(max(step - 1, 0) // accum))
    rate = bar.rate(step)
    rates = {**speed.record(rate), **good.record()}
    writer.write(step, "train", metrics, rates)
    if is_main:
      progress.console(bar.line(step, "train", metrics, rate, shown) + " | " +
                       speed.text(rates))
    window, window_start = [], step

  def every(n: int, s: int) -> bool:
    return s == steps or (n > 0 and s % n == 0)

  def due_evals(s: int) -> list[str]:
    """The evaluations due at step `s`: "eval" (data.eval_split) and the named `config.evals`."""
    return ((["eval"] if every(settings.eval_every, s) else []) +
            [name for name, (_, period) in run.evals.items() if every(period, s)] +
            [name for name, (_, period) in run.evaluators.items() if every(period, s)])

  def run_evals(s: int, which: list[str]) -> list[str]:
    """Runs and records the evaluations `which` at step `s`; returns those a stop request cut
    short (the one it landed in and those after it)."""
    nonlocal last_eval
    for i, name in enumerate(which):
      if name in run.evaluators:
        result = None if preempt.requested() else run.evaluators[name][0](state)
      else:
        pipe = eval_pipe if name == "eval" else run.evals[name][0]
        result = evaluate(eval_step, state, pipe, batch_sharding, step_rng,
                          settings.device_prefetch, should_stop=preempt.requested)
      if result is None:
        return which[i:]
      writer.write(s, name, result)
      if is_main:
        progress.console(bar.line(s, name, result, None,
                                  None if name in run.evaluators else shown))
      if on_eval is not None:
        on_eval(s, name, result)
      if name == "eval":
        last_eval = result
        if sample_grid is not None:
          _write_grid(sample_grid(state), workdir, s, final=s == steps, enabled=is_main,
                      writer=writer)
    return []

  timer = checkpoint_lib.SaveTimer(settings.checkpoint_every_secs)
  profiler = profiling.StepProfiler(tuple(settings.profile_steps), os.path.join(workdir, "profile"))
  stopped = None  # the step a preemption notice stopped the run at
  with preemption_lib.Preemption() as preempt:
    try:
      if pending:
        with good.phase("evaluation"):
          pending = run_evals(start, pending)
      for s in range(start + 1, steps + 1):
        if pending:
          break  # stopped again during the pending evaluations: their checkpoint stands
        profiler.begin(s)
        with profiler.step(s):
          t_batch = time.perf_counter()
          batch = next(iterator)
          good.add("data_wait", time.perf_counter() - t_batch)
          state, metrics = train_step(state, batch, step_rng)
          if histogram_tags:
            metrics, hist = metrics
            if s % histograms_every == 0:
              rows = np.asarray(jax.device_get(hist))
              writer.histograms(s, {t: histograms.unpack(r) for t, r in zip(histogram_tags, rows)})
        good.step()
        if s == start + 1:  # the first step is done when its results are
          jax.block_until_ready(metrics)
          first.cancel()
        profiler.end(s, state)
        window.append(metrics)
        if every(settings.log_every, s):
          flush(s)
        cut: list[str] = []
        due = due_evals(s)
        if due:
          flush(s)
          with good.phase("evaluation"):
            cut = run_evals(s, due)
        stop = preempt.reached(s)
        periodic = every(settings.checkpoint_every, s)
        if stop or periodic or timer.due():
          if periodic:
            flush(s)
          # A save at any other step (preemption, time) carries the logging window instead of
          # writing it early, so the records of a stopped-and-resumed run are the straight run's.
          with good.phase("checkpoint"):
            signals.pause("a checkpoint", preempt.requested)
            ckpt.save(s, state, iterator, {
                "step": s, "config": json.loads(config.to_json_best_effort()),
                "lineage": run_lineage, "pending_evals": cut, "window_start": window_start,
                "window": np.asarray(jax.device_get(window), np.float32).tolist()})
          timer.reset()
        if stop and (s < steps or cut):
          stopped = s
          break
      if start >= steps and not pending and not last_eval:
        last_eval = evaluate(eval_step, state, eval_pipe, batch_sharding, step_rng,
                             settings.device_prefetch)
    finally:
      first.cancel()
      profiler.close()
      iterator.close()
      ckpt.close()  # waits for asynchronous saves
      writer.close()

  if stopped is not None or pending:
    at = stopped if stopped is not None else start
    progress.console(f"stopped by {preempt.name} at step {at}: checkpoint {ckpt.directory}/{at} "
                     "is complete; the same command resumes from it")
    return last_eval
  wall = time.perf_counter() - t_start
  summary = {"steps": steps, "resumed_from": start, "wall_time_s": wall, "final_eval": last_eval,
             "parameter_bytes": parallel.bytes_per_device(state.params),
             "goodput": good.totals()}
  if is_main:
    files.write_json_atomic(os.path.join(workdir, files.SUMMARY), summary)
    progress.console(f"done in {wall:.1f} s: " + ", ".join(
        f"{k} {v:.4f}" for k, v in last_eval.items() if k != "count"))
  return last_eval
