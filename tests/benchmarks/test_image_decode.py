from benchmarks import image_decode


def test_the_decoders_give_pil_s_pixels_and_each_op_is_timed():
  got = image_decode.measure(images=12, size=64)
  assert got["PIL"][1] == 0 and got["simplejpeg"][1] == 0
  assert got["PIL resize, antialiased bilinear"][1] == 0
  assert got["image_ops.resize_box (OpenCV warpAffine)"][1] <= 1  # the same filter, rounded once
  assert all(ms > 0 for ms, _ in got.values())
