import pytest

from tests.conftest import load_experiment, run_cli
from train import config as config_lib


def test_locked_config_rejects_unknown_keys_and_wrong_types():
  c = load_experiment("mnist1d_cnn")
  with pytest.raises(AttributeError, match="stepz"):
    c.train.stepz = 3
  with pytest.raises(TypeError, match="steps"):
    c.train.steps = "many"


@pytest.mark.parametrize("field,value,match", [
    ("optim.name", "adamax", r"optim.name='adamax'; expected one of \['sgd'"),
    ("optim.schedule", "linear", r"optim.schedule='linear'"),
    ("data.normalize", "zscore", r"data.normalize='zscore'"),
    ("train.steps", 0, r"train.steps=0; expected a positive number"),
    ("paradigm", "unsupervised",
     r"paradigm='unsupervised'; expected one of \['adversarial', 'diffusion',"
     r" 'reconstruction', 'supervised'\]"),
    ("supervised.label_smoothing", 1.5, r"supervised.label_smoothing=1.5"),
    ("data.binarize", True, r"data.binarize=True with data.normalize='none'.*expected "
     r"data.normalize='unit'"),
    ("reconstruction.eval_samples", 0, r"reconstruction.eval_samples=0; expected a positive"),
    ("reconstruction.beta", -1.0, r"reconstruction.beta=-1.0; expected a non-negative"),
    ("adversarial.loss", "wasserstein", r"adversarial.loss='wasserstein'; expected one of "
     r"\['non_saturating', 'hinge'\]"),
    ("adversarial.n_critic", 0, r"adversarial.n_critic=0; expected a positive"),
    ("adversarial.ema_decay", 1.0, r"adversarial.ema_decay=1.0; expected a value in \[0, 1\)"),
    ("generative.grid_samples", -1, r"generative.grid_samples=-1; expected a non-negative"),
    ("diffusion.schedule", "sigmoid", r"diffusion.schedule='sigmoid'; expected one of "
     r"\['linear', 'cosine'\]"),
    ("diffusion.prediction", "x0", r"diffusion.prediction='x0'; expected one of \['eps', 'v'\]"),
    ("diffusion.sampler", "euler", r"diffusion.sampler='euler'"),
    ("diffusion.sample_steps", 1001, r"diffusion.sample_steps=1001; expected 1..1000"),
    ("diffusion.label_dropout", 1.0, r"diffusion.label_dropout=1.0; expected a value in \[0, 1\)"),
])
def test_bad_values_are_named(field, value, match):
  c = load_experiment("mnist1d_cnn")
  section, _, key = field.rpartition(".")
  (c[section] if section else c)[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


def test_cli_reports_an_unknown_key_with_its_name():
  r = run_cli(["--config", "experiments/mnist1d_logreg.py:tiny", "--config.train.stepz=3"])
  assert r.returncode != 0
  assert "stepz" in r.stderr


def test_cli_reports_a_wrong_type():
  r = run_cli(["--config", "experiments/mnist1d_logreg.py:tiny", "--config.train.steps=abc"])
  assert r.returncode != 0 and "steps" in r.stderr


def test_command_line_sets_are_parsed_cast_and_validated():
  sets = config_lib.parse_sets(["report.bins=10", "report.threshold_metric=precision",
                                "diffusion.clip=2.5"])
  assert sets == {"report.bins": "10", "report.threshold_metric": "precision",
                  "diffusion.clip": "2.5"}
  c = config_lib.override(config_lib.base(), sets)
  assert (c.report.bins, c.report.threshold_metric, c.diffusion.clip) == (10, "precision", 2.5)
  assert config_lib.override(config_lib.base(), {"data.binarize": "false"}).data.binarize is False
  with pytest.raises(config_lib.ConfigError, match="expected FIELD=VALUE"):
    config_lib.parse_sets(["report.bins"])
  with pytest.raises(config_lib.ConfigError, match="has no field 'report.binz'"):
    config_lib.override(config_lib.base(), {"report.binz": "3"})
  with pytest.raises(config_lib.ConfigError, match=r"--set report.bins='ten': expected a value of type int"):
    config_lib.override(config_lib.base(), {"report.bins": "ten"})
  with pytest.raises(config_lib.ConfigError, match="report.threshold_metric='f1'"):
    config_lib.override(config_lib.base(), {"report.threshold_metric": "f1"})
