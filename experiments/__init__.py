"""Experiment files (`X.py` with `get_config(arg)`, loaded by path: `python -m train --config
experiments/X.py`) and the tools that run several of them: `python -m experiments.sweep`,
`python -m experiments.reproduce` and `python -m experiments.compare`."""
