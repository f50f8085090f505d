from benchmarks import image_decode


def test_the_decoders_give_pil_s_pixels_and_each_op_is_timed():
  got = image_decode.measure(images=12, size=64)
  assert got["PIL"][1] == 0 and got["simplejpeg"][1] == 0
  assert got["PIL resize, antialiased bilinear"][1] == 0
  assert got["image_ops.resize_box (OpenCV warpAffine)"][1] <= 1  # the same filter, rounded once
  assert all(ms > 0 for ms, _ in got.values())


def test_the_share_of_enlarging_crops_counts_boxes_no_larger_than_the_output():
  assert image_decode.enlarging_share(200, crops=200) == 1.0  # every box of a 200 px image
  assert 0.6 < image_decode.enlarging_share(256, crops=2000) < 0.9
  assert image_decode.enlarging_share(2000, crops=200) < 0.2
