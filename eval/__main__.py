"""`python -m eval --workdir DIR`: the evaluation report of a trained classifier (eval.report)."""

from eval import report
from train import cli

if __name__ == "__main__":
  report.define_flags()
  cli.run(report.main)
