import pytest

from tests.conftest import load_experiment
from train import config as config_lib
from train import paradigms


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
    ("data.device_prefetch", -2, r"data.device_prefetch=-2; expected -1 \(2 on GPU and TPU, 0 "
     r"on CPU\) or a count >= 0"),
    ("data.dtype", "float16", r"data.dtype='float16'; expected one of \['float32', 'bfloat16'\]"),
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
  # each paradigm's sections are in the configs of that paradigm only
  owner = {"reconstruction": "reconstruction", "adversarial": "adversarial",
           "generative": "adversarial", "diffusion": "diffusion"}
  section, _, key = field.rpartition(".")
  c = config_lib.base(owner[section]) if section in owner else load_experiment("mnist1d_cnn")
  (c[section] if section else c)[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


# An unknown key and a value of the wrong type through `python -m train`: the "typo" and "type"
# cases of tests/structure/test_cli.py (the exact line and status 2).


def test_command_line_sets_are_parsed_cast_and_validated():
  sets = config_lib.parse_sets(["report.bins=10", "report.threshold_metric=precision"])
  assert sets == {"report.bins": "10", "report.threshold_metric": "precision"}
  c = config_lib.override(config_lib.base(), sets)
  assert (c.report.bins, c.report.threshold_metric) == (10, "precision")
  assert config_lib.override(config_lib.base("diffusion"), {"diffusion.clip": "2.5"}
                             ).diffusion.clip == 2.5
  assert config_lib.override(config_lib.base(), {"data.binarize": "false"}).data.binarize is False
  assert config_lib.override(config_lib.base(), {"optim.freeze": "('conv_0',)"}
                             ).optim.freeze == ("conv_0",)
  assert config_lib.override(config_lib.base(), {"data.keep_classes": "3"}
                             ).data.keep_classes == (3,)
  with pytest.raises(config_lib.FlagError, match="expected FIELD=VALUE"):
    config_lib.parse_sets(["report.bins"])
  with pytest.raises(config_lib.FlagError, match="has no field 'report.binz'"):
    config_lib.override(config_lib.base(), {"report.binz": "3"})
  with pytest.raises(config_lib.FlagError,
                     match=r"--set report.bins=ten: report.bins='ten' is a str; expected an int"):
    config_lib.override(config_lib.base(), {"report.bins": "ten"})
  with pytest.raises(config_lib.FlagError, match="report.threshold_metric='f1'"):
    config_lib.override(config_lib.base(), {"report.threshold_metric": "f1"})
  with pytest.raises(config_lib.FlagError, match="has no field 'diffusion.clip'"):
    config_lib.override(config_lib.base(), {"diffusion.clip": "2.5"})  # a supervised config


@pytest.mark.parametrize("typo,meant", [
    ("optim.lr", "optim.learning_rate"), ("train.stepz", "train.steps"),
    ("data.batch", "data.batch_size"), ("optim.wd", "optim.weight_decay"),
    ("seeed", "seed"), ("optimm.name", "optim.name")])
def test_a_mistyped_field_is_answered_with_the_field_meant(typo, meant):
  assert config_lib.closest_fields(config_lib.base(), typo)[0] == meant


def test_each_paradigm_owns_its_sections():
  """base(paradigm) holds the common fields and that paradigm's sections only."""
  common = set(config_lib.base().keys()) - set(paradigms.get("supervised").defaults())
  for name in ("supervised", "reconstruction", "adversarial", "diffusion"):
    own = set(paradigms.get(name).defaults())
    assert set(config_lib.base(name).keys()) == common | own
    config_lib.validate(config_lib.base(name))
  with pytest.raises(config_lib.ConfigError, match=r"paradigm='gan'; expected one of"):
    config_lib.base("gan")


@pytest.mark.parametrize("spec,name", [
    ("experiments/mnist1d_cnn.py", "mnist1d_cnn"), ("experiments/mnist1d_cnn.py:tiny", "mnist1d_cnn"),
    ("experiments.mnist1d_cnn", "mnist1d_cnn"), ("experiments.mnist1d_cnn:tiny", "mnist1d_cnn")])
def test_experiment_name_from_a_file_or_a_module(spec, name):
  assert config_lib.experiment_name(spec) == name
  assert config_lib.load(spec).model.name == "cnn.CNN"
