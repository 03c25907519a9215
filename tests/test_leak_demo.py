"""The leak demonstration's two splits on a tiny synthetic set: balancing the whole set before an
ungrouped split puts copies (and lesion siblings) of test images in training; jimb's grouped split
with balancing inside the training part does not. Checked against brute force over all pairs."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

import numpy as np
import pytest

from jimb.data.dataset import Dataset
from jimb.data.splits import make_folds

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("leak_demo", ROOT / "benchmarks/leak_demo.py")
leak_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(leak_demo)


def _data(seed=0):
  """3 imbalanced classes (48 / 16 / 8) of random 8x8 RGB images, two images per lesion."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(3), [48, 16, 8])
  images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
  lesions = np.array([f"L{i // 2}" for i in range(len(labels))])   # pairs share a class
  return {"images": images, "labels": labels, "class_names": np.array(["a", "b", "c"]),
          "lesion_id": lesions}


def _variants(image):
  """The 8 flips / quarter turns of one image, by NumPy alone."""
  turns = [np.rot90(image, k) for k in range(4)]
  return turns + [np.fliplr(t) for t in turns]


def _parts(x, y, groups, grouped):
  ds = Dataset(x, y, ("a", "b", "c"), groups=groups if grouped else None)
  return [{"train": f.train, "test": f.test} for f in make_folds(ds, 3, 0.1, seed=0)]


def test_balance_whole_makes_turned_copies_of_each_class():
  d = _data()
  x, y, g, source = leak_demo.balance_whole(d["images"], d["labels"], d["lesion_id"], 40, seed=1)
  np.testing.assert_array_equal(np.bincount(y), [48, 40, 40])
  np.testing.assert_array_equal(source[:72], np.arange(72))
  np.testing.assert_array_equal(y, d["labels"][source])
  np.testing.assert_array_equal(g, d["lesion_id"][source])
  for row in range(72, len(y)):
    original = d["images"][source[row]]
    assert not np.array_equal(x[row], original)   # never the identity: a pixel check misses it
    assert any(np.array_equal(x[row], v) for v in _variants(original))
  canon = leak_demo.canonical(x)
  np.testing.assert_array_equal(canon, leak_demo.canonical(d["images"])[source])


def test_leaky_split_puts_copies_of_test_images_in_training():
  d = _data()
  x, y, g, source = leak_demo.balance_whole(d["images"], d["labels"], d["lesion_id"], 40, seed=1)
  parts = _parts(x, y, g, grouped=False)
  found = leak_demo.leaks(parts, x, g)
  copy = sibling = 0
  for p in parts:   # brute force: same source image, or same lesion, on both sides
    copy += sum(np.isin(source[t], source[p["train"]]) for t in p["test"])
    sibling += sum(np.isin(g[t], g[p["train"]]) for t in p["test"])
  assert found["test"] == len(y)
  assert found["turned_copy"] == copy > 0
  assert found["lesion_sibling"] == sibling >= copy


def test_honest_split_keeps_lesions_and_copies_out_of_test():
  d = _data()
  parts = _parts(d["images"], d["labels"], d["lesion_id"], grouped=True)
  found = leak_demo.leaks(parts, d["images"], d["lesion_id"])
  assert found == {"test": len(d["labels"]), "pixel_copy": 0, "turned_copy": 0,
                   "lesion_sibling": 0}
  # Balancing inside a training part copies its own rows only, so a test image gets no copy.
  for p in parts:
    tr = p["train"]
    x, _, _, source = leak_demo.balance_whole(d["images"][tr], d["labels"][tr],
                                              d["lesion_id"][tr], 40, seed=1)
    train_keys = {row.tobytes() for row in leak_demo.canonical(x)}
    assert not any(row.tobytes() in train_keys
                   for row in leak_demo.canonical(d["images"][p["test"]]))


def test_config_differs_only_in_split_and_balancing():
  args = argparse.Namespace(
      seed=0, folds=3, val_fraction=0.1, widths=[4], batch_size=8, epochs=1, min_count=40,
      min_count_resolved=40)
  a, b = leak_demo.config(args, "x.npz", True), leak_demo.config(args, "x.npz", False)
  assert (a.data.group_key, a.data.duplicates, a.resample.image.name) == ("", "off", "")
  assert (b.data.group_key, b.resample.image.name) == ("lesion_id", "DuplicateToMinimum")
  assert b.resample.image.min_count == round(40 * 2 / 3 * 0.9)
  for block in ("model", "loss", "augment", "train", "optim", "split"):
    assert a[block].to_dict() == b[block].to_dict(), block


@pytest.mark.slow
def test_end_to_end_prints_the_table(tmp_path, capsys):
  d = _data()
  npz = tmp_path / "tiny.npz"
  np.savez(npz, **d)
  leak_demo.main(["--npz", str(npz), "--min_count", "40", "--epochs", "1", "--widths", "4",
                  "--batch_size", "8", "--workdir", str(tmp_path / "runs")])
  out = capsys.readouterr().out
  assert "gap A - B" in out and "lesion sibling" in out
