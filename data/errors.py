"""The error of data that cannot be served, shared by data/'s modules (`sources.DataError`)."""


class DataError(ValueError):
  """A data source or split that cannot be served as configured."""
  exit_status = 3  # train.errors.EXIT_DATA (data/ imports nothing of train/)
