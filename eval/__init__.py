"""Evaluation over arrays and `python -m eval --workdir DIR` (see DESIGN.md, Evaluation).

Not built yet: metrics, calibration, attribution, generative metrics and drift arrive with their
own issue. Today a run's evaluation is its paradigm's `eval_step` (sums and counts, merged by
`train.paradigms.reduce_eval`), written to `WORKDIR/metrics.jsonl` with `split: "eval"`.
"""
