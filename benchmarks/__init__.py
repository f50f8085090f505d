"""Speed and accuracy measurements beside references (`python -m benchmarks.run`); not part of
the test suite."""
