from arch import conv
from benchmarks import conv_speed


def test_the_training_table_times_both_ways_and_restores_the_bounds(monkeypatch, capsys):
  monkeypatch.setattr(conv_speed, "TRAINING", {
      "tiny": ((2, 8, 3), (3, 3, 4), 2, ((1, 1),)),  # 8 x 9 patches, 3 channels: im2col
      "tiny, 8 channels": ((2, 8, 8), (3, 8, 4), 2, ((1, 1),))})  # 8 x 24
  monkeypatch.setattr(conv, "IM2COL_MACS", 100)  # under both layers' (288 and 768)
  bounds = conv.IM2COL_MACS, conv.IM2COL_CHANNELS, conv.IM2COL_ELEMENTS
  conv_speed.training_rows(conv_speed.step_options(), rounds=1)
  rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
  assert [(r[0], r[2], r[3]) for r in rows] == [("| tiny", "72", "im2col"),
                                                 ("| tiny, 8 channels", "192", "convolutions")]
  assert all(float(t) > 0 for r in rows for t in (r[4], r[5], r[7], r[8].rstrip(" |")))
  assert (conv.IM2COL_MACS, conv.IM2COL_CHANNELS, conv.IM2COL_ELEMENTS) == bounds
