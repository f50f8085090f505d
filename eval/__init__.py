"""Evaluation: plain functions over arrays, and the command-line tools that apply them to a
trained run.

- over arrays: `metrics` (classification, from mergeable streamed statistics), `calibration`
  (ECE, reliability, temperature scaling), `attribution` (gradients, integrated gradients,
  SmoothGrad), `attention` (maps a Transformer sows), `generative` (Frechet distance, coverage,
  k-NN precision and recall), `drift` (MMD, chi-squared and KS tests), `lm` (bigram baseline);
- `restore`: the one path from a workdir to its config, model, paradigm and state;
- tools: `python -m eval` (`report`, a classifier's report), `eval.generative`,
  `eval.reconstruction`, `eval.drift`, `eval.attention`, `eval.lm`, `eval.compress`.

A run's own evaluation during training is its paradigm's `eval_step` (sums and counts, merged
by `train.paradigms.reduce_eval`), written to `WORKDIR/metrics.jsonl` with `split: "eval"`.
"""
