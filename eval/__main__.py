"""`python -m eval --workdir DIR`: the evaluation report of a trained classifier (eval.report)."""

from absl import app

from eval import report

if __name__ == "__main__":
  report.define_flags()
  app.run(report.main)
