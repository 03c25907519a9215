"""benchmarks/synthetic_images.py on hand-made images: roughness by hand, the noisy share and the
brightness row of a run's samples against the real images of their class."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("synthetic_images",
                                               ROOT / "benchmarks/synthetic_images.py")
synthetic_images = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_images)


def test_roughness_of_a_checkerboard_and_a_flat_image():
  board = (np.indices((4, 4)).sum(0) % 2).astype(np.float32)[None, ..., None]
  flat = np.full((1, 4, 4, 1), 0.3, np.float32)
  np.testing.assert_allclose(synthetic_images.roughness(np.concatenate([board, flat])), [2.0, 0.0])


def test_rows_count_noisy_samples_against_the_roughest_real_image(tmp_path, monkeypatch, capsys):
  rng = np.random.default_rng(0)
  smooth = np.tile(np.linspace(0, 255, 6, dtype=np.uint8), (6, 1))[None, ..., None]
  real = np.repeat(smooth, 4, axis=0)                       # class 1: 4 smooth images
  images = np.concatenate([rng.integers(0, 256, (3, 6, 6, 1), dtype=np.uint8), real])
  npz = tmp_path / "data.npz"
  np.savez(npz, images=images, labels=np.array([0, 0, 0, 1, 1, 1, 1]),
           split=np.zeros(7, np.int8), class_names=np.array(["a", "b"]))
  samples = tmp_path / "run" / "synthesis" / "fold_0" / "samples_x"
  samples.mkdir(parents=True)
  noise = rng.uniform(size=(1, 6, 6, 1)).astype(np.float32)
  x = np.concatenate([real[:3] / 255.0, noise]).astype(np.float32)   # 1 of 4 noisy, class 1
  np.savez(samples / "samples.npz", x=x, y=np.ones(4, np.int64))
  monkeypatch.setattr(sys, "argv", ["synthetic_images.py", str(npz), str(tmp_path / "run")])
  synthetic_images.main()
  lines = capsys.readouterr().out.splitlines()
  assert lines[2].startswith("| real b | 4 | 0.500 +- 0.000 |")
  assert lines[3].endswith("| 25.0 % |") and "| 4 |" in lines[3]
  assert len(lines) == 4   # class a has no synthetic samples: no rows


def test_a_workdir_without_samples_is_an_error_naming_it(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["synthetic_images.py", str(tmp_path / "x.npz"),
                                    str(tmp_path / "plain_run")])
  with pytest.raises(SystemExit, match="plain_run holds no synthesis/fold_"):
    synthetic_images.main()
