"""Image collections laid out as they ship: images listed in a csv (HAM10000), train/ val/ test/
split folders, group ids from file names or a csv; loaded exactly, refused with the fix, and
trained end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image
import pytest

from helpers import tiny_config
from jimb.data import folds as folds_lib
from jimb import experiment
from jimb.config import base_config
from jimb.data.sources import load_source, load_test_source
from test_sources import fake_tfds

QUIET = lambda s: None
HAM_CSV = "HAM10000_metadata.csv"


def _cfg(**kw):
  cfg = base_config().data
  cfg.update(kw)
  return cfg


def _image(seed: int, size: int = 8) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _save(path, array) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _write_csv(path, header, rows) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(header)
    writer.writerows(rows)


def _ham(root, lesions_per_class=(3, 2, 2)):
  """HAM10000 as downloaded: the metadata csv (lesion_id, image_id, dx, age) beside the folders
  HAM10000_images_part_1 and _part_2, images named by id plus extension, two per lesion.
  Returns the csv's (lesion_id, image_id, dx) rows and each image's pixels by id."""
  rows, pixels = [], {}
  for c, dx in enumerate(["nv", "mel", "bkl"]):
    for lesion in range(lesions_per_class[c]):
      for _ in range(2):
        n = len(rows)
        image_id = f"ISIC_{n:07d}"
        pixels[image_id] = _image(n)
        _save(root / f"HAM10000_images_part_{1 + n % 2}" / f"{image_id}.png", pixels[image_id])
        rows.append((f"HAM_{c}{lesion:03d}", image_id, dx))
  _write_csv(root / HAM_CSV, ["lesion_id", "image_id", "dx", "age"],
             [r + ("50",) for r in rows])
  return rows, pixels


def _ham_cfg(root, **kw):
  return _cfg(**{"source": "csv_images", "path": str(root / HAM_CSV), "image_key": "image_id",
                 "label_key": "dx", "group_key": "lesion_id", **kw})


def _split_folders(root, counts):
  """root/<split>/<class>/<name>.png with distinct pixels; each split's images in load order."""
  out, seed = {}, 100
  for split, classes in counts.items():
    images = []
    for cls in sorted(classes):
      for i in range(classes[cls]):
        seed += 1
        images.append(_image(seed))
        _save(root / split / cls / f"P{seed:03d}_{i}.png", images[-1])
    out[split] = np.stack(images)
  return out


# ----------------------------------------------------------------------------- csv_images


def test_csv_images_finds_ham10000_images_by_id_in_both_folders(tmp_path):
  rows, pixels = _ham(tmp_path)
  # A macOS resource fork next to an image is neither a match nor an ambiguity.
  (tmp_path / "HAM10000_images_part_1" / "._ISIC_0000000.png").write_bytes(b"\0\5\26\7")
  ds = load_source(_ham_cfg(tmp_path))
  assert ds.class_names == ("bkl", "mel", "nv") and ds.name == "HAM10000_metadata"
  np.testing.assert_array_equal(ds.x, np.stack([pixels[image_id] for _, image_id, _ in rows]))
  np.testing.assert_array_equal(ds.y, [ds.class_names.index(dx) for _, _, dx in rows])
  np.testing.assert_array_equal(ds.groups, [lesion for lesion, _, _ in rows])


def test_csv_images_by_file_name_relative_path_or_id_under_image_dir(tmp_path):
  images = tmp_path / "images"
  a, b, c = _image(1), _image(2), _image(3)
  _save(images / "x" / "a.png", a)
  _save(images / "y" / "b.png", b)
  _save(images / "c.png", c)
  _write_csv(tmp_path / "lists" / "list.csv", ["file", "finding"],
             [("a.png", "pos"), ("y/b.png", "neg"), ("c", "pos")])
  ds = load_source(_cfg(source="csv_images", path=str(tmp_path / "lists" / "list.csv"),
                        image_key="file", label_key="finding", image_dir=str(images)))
  np.testing.assert_array_equal(ds.x, np.stack([a, b, c]))
  np.testing.assert_array_equal(ds.y, [1, 0, 1])
  assert ds.class_names == ("neg", "pos") and ds.groups is None


def test_csv_images_missing_images_are_counted_and_named(tmp_path):
  _ham(tmp_path)
  for image_id in ("ISIC_0000001", "ISIC_0000004"):
    next(tmp_path.rglob(f"{image_id}.png")).unlink()
  with pytest.raises(FileNotFoundError,
                     match=r"2 of 14 images listed in column 'image_id' of .*HAM10000_metadata"
                           r"\.csv are not under .*'ISIC_0000001', 'ISIC_0000004'; it holds 12 "
                           r"image files.*data\.image_dir.*data\.image_key"):
    load_source(_ham_cfg(tmp_path))


def test_csv_images_ambiguous_images_are_named(tmp_path):
  _ham(tmp_path)
  _save(tmp_path / "HAM10000_images_part_2" / "ISIC_0000000.jpg", _image(0))
  with pytest.raises(ValueError,
                     match=r"1 image\(s\) listed in column 'image_id' .* match several files "
                           r"under .*ISIC_0000000: HAM10000_images_part_1/ISIC_0000000\.png, "
                           r"HAM10000_images_part_2/ISIC_0000000\.jpg.*extra copies"):
    load_source(_ham_cfg(tmp_path))


def test_csv_images_bad_settings(tmp_path):
  _ham(tmp_path)
  with pytest.raises(ValueError, match="image column 'image' is not in .*lesion_id.*image_key"):
    load_source(_ham_cfg(tmp_path, image_key="image"))
  with pytest.raises(ValueError, match="is a folder; .*csv listing the images"):
    load_source(_ham_cfg(tmp_path, path=str(tmp_path)))
  with pytest.raises(FileNotFoundError, match="nowhere is not a folder; .*data.image_dir"):
    load_source(_ham_cfg(tmp_path, image_dir=str(tmp_path / "nowhere")))
  _write_csv(tmp_path / "header.csv", ["lesion_id", "image_id", "dx"], [])
  with pytest.raises(ValueError, match="holds no examples .only a header"):
    load_source(_ham_cfg(tmp_path, path=str(tmp_path / "header.csv")))


# ----------------------------------------------------------------------------- split folders


def test_split_folders_train_on_the_named_one_and_test_on_another(tmp_path):
  out = _split_folders(tmp_path / "xr", {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 2}})
  cfg = _cfg(source="image_folder", path=str(tmp_path / "xr"), test_split="test")
  train, test = load_source(cfg), load_test_source(cfg)
  np.testing.assert_array_equal(train.x, out["train"])
  np.testing.assert_array_equal(test.x, out["test"])
  np.testing.assert_array_equal(test.y, [0, 1, 1])
  assert train.class_names == test.class_names == ("a", "b") and train.name == "xr"


def test_split_folder_errors_name_the_folders(tmp_path):
  root = tmp_path / "xr"
  _split_folders(root, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
  cfg = lambda **kw: _cfg(**{"source": "image_folder", "path": str(root), **kw})
  with pytest.raises(ValueError, match=r"class folder .*test holds no image files; its "
                                       r"sub-folders \['a', 'b'\] look like class folders.*"
                                       r"data\.split to the training sub-folder"):
    load_source(cfg(split=""))
  with pytest.raises(ValueError, match=r"data\.test_split='tst': .*tst is not a folder of class "
                                       r"folders; the sub-folders of .* are \['test', 'train'\]"):
    load_test_source(cfg(test_split="tst"))
  with pytest.raises(ValueError, match="test_split='train' names the same examples as the "
                                       "training split"):
    load_test_source(cfg(test_split="train"))
  with pytest.raises(ValueError, match="val_split='test' names the same examples as "
                                       "--config.data.test_split"):
    load_test_source(cfg(test_split="test", val_split="test"), "val_split")
  _save(root / "test" / "c" / "0.png", _image(0))
  with pytest.raises(ValueError, match=r"class folders of .*train and .*test differ \(only in "
                                       r"train: \[\], only in test: \['c'\]\)"):
    load_test_source(cfg(test_split="test"))
  other = tmp_path / "other"
  _split_folders(other, {"training": {"a": 1, "b": 1}, "testing": {"a": 1, "b": 1}})
  with pytest.raises(ValueError, match="training images are not in one: --config.data.split="
                                       "'train' is not a folder of class folders there"):
    load_test_source(_cfg(source="image_folder", path=str(other), test_split="testing"))


# ----------------------------------------------------------------------------- group ids


def test_group_pattern_takes_ids_from_file_names(tmp_path):
  root = tmp_path / "xr"
  _split_folders(root, {"train": {"a": 2, "b": 2}})
  ds = load_source(_cfg(source="image_folder", path=str(root), group_pattern=r"^(P\d+)_"))
  np.testing.assert_array_equal(ds.groups, ["P101", "P102", "P103", "P104"])
  cfg = lambda pattern: _cfg(source="image_folder", path=str(root), group_pattern=pattern)
  with pytest.raises(ValueError, match="has no group; put the group id's part in parentheses"):
    load_source(cfg(r"^P\d+_"))
  with pytest.raises(ValueError, match="is not a valid regular expression"):
    load_source(cfg("(["))
  _save(root / "train" / "b" / "scan.png", _image(9))
  with pytest.raises(ValueError, match=r"1 of 5 file names give no group id with "
                                       r".*\(e\.g\. 'scan\.png'\); fix the pattern"):
    load_source(cfg(r"^(P\d+)_"))


def test_group_csv_maps_images_by_name_or_stem(tmp_path):
  root = tmp_path / "xr"
  _split_folders(root, {"train": {"a": 2, "b": 2}})
  groups = tmp_path / "groups.csv"
  _write_csv(groups, ["image", "patient"], [("P101_0", "p1"), ("P102_1.png", "p1"),
                                            ("P103_0", "p2"), ("P104_1", "p3"), ("other", "p4")])
  cfg = lambda **kw: _cfg(**{"source": "image_folder", "path": str(root),
                             "group_csv": str(groups), "group_key": "patient", **kw})
  np.testing.assert_array_equal(load_source(cfg()).groups, ["p1", "p1", "p2", "p3"])
  with pytest.raises(ValueError, match="needs --config.data.group_key"):
    load_source(cfg(group_key=""))
  with pytest.raises(ValueError, match="both give group ids; set one"):
    load_source(cfg(group_pattern="(P)"))
  with pytest.raises(ValueError, match="is a column of --config.data.group_csv, which is not set"):
    load_source(cfg(group_csv=""))
  with pytest.raises(FileNotFoundError, match="nope.csv is not a file; fix .*data.group_csv"):
    load_source(cfg(group_csv=str(tmp_path / "nope.csv")))
  _write_csv(groups, ["image", "patient"], [("P101_0", "p1"), ("P101_0", "p2"),
                                            ("P102_1", "p1"), ("P103_0", "p2")])
  with pytest.raises(ValueError, match=r"gives 1 image\(s\) two different groups .*P101_0"):
    load_source(cfg())
  _write_csv(groups, ["image", "patient"], [("P101_0", "p1"), ("P102_1", "p1"),
                                            ("P103_0", "p2")])
  with pytest.raises(ValueError, match=r"1 of 4 images are not in column 'image' of "
                                       r".*groups\.csv.*'P104_1\.png'"):
    load_source(cfg())


# ----------------------------------------------------------------------------- load_data


def test_one_class_is_refused_by_name(tmp_path):
  path = tmp_path / "one.csv"
  path.write_text("age,dx\n" + "".join(f"{50 + i},nv\n" for i in range(6)))
  cfg = tiny_config(**{"data.source": "csv", "data.path": str(path), "data.label_key": "dx",
                       "imbalance.profile": "none"})
  with pytest.raises(ValueError, match=r"one class only, 'nv' \(6 examples\).*data\.label_key"):
    folds_lib.load_data(cfg, QUIET)
  npz = tmp_path / "zeros.npz"
  np.savez(npz, images=np.zeros((6, 8, 8, 1), np.uint8), labels=np.zeros(6, np.int64),
           class_names=np.array(["benign", "malignant"]))
  with pytest.raises(ValueError, match="one class only, 'benign'"):
    folds_lib.load_data(tiny_config(**{"data.source": "npz", "data.path": str(npz),
                                        "imbalance.profile": "none"}), QUIET)


def _three_splits(path):
  """An npz with split 0 (train), 1 (test) and 2 (validation), each pixel-tagged by its row."""
  labels = np.tile([0, 1], 15)
  split = np.repeat([0, 1, 2], 10)
  images = np.zeros((30, 8, 8, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(30)
  np.savez(path, images=images, labels=labels, split=split)
  return split


def test_npz_holdout_with_a_fixed_validation_split(tmp_path):
  split = _three_splits(tmp_path / "s.npz")
  cfg = lambda **kw: tiny_config(**{
      "data.source": "npz", "data.path": str(tmp_path / "s.npz"), "data.npz_split": 0,
      "data.test_split": "1", "data.val_split": "2", "split.mode": "holdout",
      "imbalance.profile": "none", **kw})
  ds, (fold,), _ = folds_lib.load_data(cfg(), QUIET)
  for part, value in (("train", 0), ("test", 1), ("val", 2)):
    np.testing.assert_array_equal(ds.x[getattr(fold, part), 0, 0, 0],
                                  np.flatnonzero(split == value))
  with pytest.raises(ValueError, match="is the validation part of --config.split.mode=holdout"):
    folds_lib.load_data(cfg(**{"split.mode": "kfold"}), QUIET)
  with pytest.raises(ValueError, match="npz_split=-1 trains on every row .* val rows included"):
    folds_lib.load_data(cfg(**{"data.npz_split": -1}), QUIET)


def test_tfds_holdout_with_a_fixed_validation_split(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  examples = {split: [{"id": f"{split}{k}", "image": np.full((32, 32, 3), 10 * s + k, np.uint8),
                       "label": k} for k in range(10)]
              for s, split in enumerate(["train", "validation", "test"])}
  cfg = tiny_config(**{"data.source": "tfds", "data.name": "cifar10",
                       "data.data_dir": str(tmp_path), "data.test_split": "test",
                       "data.val_split": "validation", "split.mode": "holdout",
                       "imbalance.profile": "none"})
  with tfds.testing.mock_data(as_data_source_fn=fake_tfds(examples)):
    ds, (fold,), _ = folds_lib.load_data(cfg, QUIET)
  np.testing.assert_array_equal(ds.x[fold.train, 0, 0, 0], np.arange(10))
  np.testing.assert_array_equal(ds.x[fold.val, 0, 0, 0], 10 + np.arange(10))
  np.testing.assert_array_equal(ds.x[fold.test, 0, 0, 0], 20 + np.arange(10))


# ----------------------------------------------------------------------------- end to end


def test_ham10000_layout_trains_with_lesion_grouped_folds(tmp_path):
  rows, _ = _ham(tmp_path / "ham", lesions_per_class=(8, 8, 8))
  cfg = tiny_config(**{
      "data.source": "csv_images", "data.path": str(tmp_path / "ham" / HAM_CSV),
      "data.image_key": "image_id", "data.label_key": "dx", "data.group_key": "lesion_id",
      "imbalance.profile": "none", "split.val_fraction": 0.3, "train.epochs": 1,
      "train.batch_size": 8})
  logs = []
  results = experiment.train_and_evaluate(cfg, tmp_path / "run", log=logs.append)
  assert any("grouped by lesion_id (24 groups)" in line for line in logs)
  saved = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
  assert (saved["grouped"], saved["group_by"], saved["num_groups"]) == (True, "lesion_id", 24)
  assert results["data"]["num_examples"] == len(rows) == 48
  lesions = np.array([lesion for lesion, _, _ in rows])
  _, folds, _ = folds_lib.load_data(cfg, QUIET)
  for fold in folds:
    sides = [set(lesions[part]) for part in (fold.train, fold.val, fold.test)]
    assert len(sides[1]) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    with np.load(tmp_path / "run" / f"fold_{fold.index}" / "test_probs.npz") as f:
      np.testing.assert_array_equal(f["index"], fold.test)
  np.testing.assert_array_equal(np.sort(np.concatenate([f.test for f in folds])), np.arange(48))


def test_train_val_test_folders_run_as_holdout(tmp_path):
  root = tmp_path / "xr"
  out = _split_folders(root, {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2},
                              "test": {"a": 3, "b": 3}})
  cfg = tiny_config(**{
      "data.source": "image_folder", "data.path": str(root), "data.test_split": "test",
      "data.val_split": "val", "split.mode": "holdout", "imbalance.profile": "none",
      "train.epochs": 1, "train.batch_size": 8})
  ds, (fold,), _ = folds_lib.load_data(cfg, QUIET)
  for part in ("train", "val", "test"):
    np.testing.assert_array_equal(ds.x[getattr(fold, part)], out[part])
  np.testing.assert_array_equal(ds.y[fold.test], [0, 0, 0, 1, 1, 1])
  logs = []
  results = experiment.train_and_evaluate(cfg, tmp_path / "run", log=logs.append)
  assert any("not grouped" in line and "fixed validation split 'val'" in line for line in logs)
  assert results["data"]["num_examples"] == 22 and not results["data"]["grouped"]
  with np.load(tmp_path / "run" / "fold_0" / "test_probs.npz") as f:
    np.testing.assert_array_equal(f["index"], fold.test)
