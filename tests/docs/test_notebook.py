"""docs/notebooks/tour.py, read by jupytext and executed by nbclient in a Jupyter kernel, as a
user opens it: every cell runs, the figures render, and the restored run agrees with the one it
trained."""

import os
import re

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")


def test_the_tour_notebook_runs_cell_by_cell(tmp_path, monkeypatch):
  monkeypatch.setenv("STRATA_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # the notebook asks for its four devices
  notebook = jupytext.read(os.path.join(ROOT, "docs", "notebooks", "tour.py"))
  assert sum(c.cell_type == "code" for c in notebook.cells) == 6
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the batch, the curves
  text = "".join(o.get("text", "") for o in outputs)
  assert "'fsdp': 2" in text
  own, back = re.search(r"test accuracy (\S+) \(the run's own: (\S+)\)", text).groups()
  assert own == back
  assert re.search(r"28298 parameters, 24576 of them split over fsdp", text)
