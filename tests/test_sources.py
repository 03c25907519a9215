"""Every source on small files written here, checked against the arrays that went in."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from sklearn import datasets

from jimb import files
from jimb.config import base_config
from jimb.data.sources import load_source, resize_images


def _cfg(**kw):
  cfg = base_config().data
  cfg.update(kw)
  return cfg


def _rng_images(n, h, w, c, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


# ----------------------------------------------------------------------------- sklearn


def test_sklearn_digits_matches_sklearn():
  ds = load_source(_cfg(source="sklearn", name="digits"))
  ref = datasets.load_digits()
  assert ds.x.shape == (len(ref.target), 8, 8, 1) and ds.x.dtype == np.float32
  np.testing.assert_allclose(ds.x[..., 0], ref.images / 16.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.y, ref.target)
  assert ds.class_names == tuple("0123456789") and ds.name == "digits"


def test_sklearn_table_has_feature_and_class_names():
  ds = load_source(_cfg(source="sklearn", name="wine"))
  ref = datasets.load_wine()
  np.testing.assert_allclose(ds.x, ref.data.astype(np.float32))
  assert ds.feature_names == tuple(ref.feature_names)
  assert ds.class_names == tuple(ref.target_names)


def test_unknown_source_and_sklearn_name():
  with pytest.raises(ValueError, match="data.source.*csv"):
    load_source(_cfg(source="parquet"))
  with pytest.raises(ValueError, match="data.name.*digits"):
    load_source(_cfg(source="sklearn", name="mnist"))


# ----------------------------------------------------------------------------- npz


def test_npz_images_with_groups(tmp_path):
  images = _rng_images(6, 5, 4, 3)
  labels = np.array([0, 1, 2, 0, 1, 2])
  lesions = np.array(["a", "a", "b", "c", "c", "d"])
  path = tmp_path / "ham.npz"
  np.savez(path, images=images, labels=labels, class_names=np.array(["nv", "mel", "bcc"]),
           lesion_id=lesions)
  ds = load_source(_cfg(source="npz", path=str(path), group_key="lesion_id"))
  np.testing.assert_array_equal(ds.x, images)
  np.testing.assert_array_equal(ds.y, labels)
  np.testing.assert_array_equal(ds.groups, lesions)
  assert ds.class_names == ("nv", "mel", "bcc") and ds.name == "ham"


def test_npz_grayscale_gets_channel_axis_and_default_names(tmp_path):
  path = tmp_path / "g.npz"
  images = _rng_images(4, 3, 3, 1)[..., 0]
  np.savez(path, images=images, labels=np.array([0, 2, 1, 2]))
  ds = load_source(_cfg(source="npz", path=str(path)))
  assert ds.x.shape == (4, 3, 3, 1) and ds.class_names == ("0", "1", "2")


def test_npz_jpeg_bytes_with_split(tmp_path):
  images = [np.full((6, 7, 3), 40 * i, np.uint8) for i in range(4)]
  encoded = []
  for im in images:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=95)
    encoded.append(np.frombuffer(buf.getvalue(), np.uint8))
  offsets = np.cumsum([0] + [len(e) for e in encoded])
  path = tmp_path / "j.npz"
  np.savez(path, jpeg_data=np.concatenate(encoded), jpeg_offsets=offsets,
           labels=np.array([0, 1, 1, 0]), class_names=np.array(["neg", "pos"]),
           split=np.array([0, 1, 0, 1]), split_names=np.array(["train", "test"]))
  ds = load_source(_cfg(source="npz", path=str(path), npz_split=1))
  assert ds.x.shape == (2, 6, 7, 3) and ds.x.dtype == np.uint8
  np.testing.assert_array_equal(ds.y, [1, 0])
  # Flat colours survive JPEG nearly exactly.
  np.testing.assert_allclose(ds.x.astype(float), np.stack([images[1], images[3]]), atol=3)
  assert ds.class_names == ("neg", "pos")


def test_npz_table(tmp_path):
  features = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]], np.float32)
  path = tmp_path / "t.npz"
  np.savez(path, features=features, labels=np.array([1, 0, 1]),
           class_names=np.array(["no", "yes"]), feature_names=np.array(["age", "bmi"]))
  ds = load_source(_cfg(source="npz", path=str(path)))
  np.testing.assert_array_equal(ds.x, features)  # NaN positions match too
  assert ds.feature_names == ("age", "bmi") and not ds.is_image


def test_npz_label_key_takes_precedence(tmp_path):
  path = tmp_path / "k.npz"
  np.savez(path, images=_rng_images(3, 2, 2, 1), labels=np.array([0, 0, 0]),
           dx=np.array([1, 0, 1]))
  ds = load_source(_cfg(source="npz", path=str(path), label_key="dx"))
  np.testing.assert_array_equal(ds.y, [1, 0, 1])


def test_npz_missing_arrays(tmp_path):
  path = tmp_path / "m.npz"
  np.savez(path, images=_rng_images(2, 2, 2, 1), labels=np.array([0, 1]))
  with pytest.raises(ValueError, match="'patient'.*images.*labels.*group_key"):
    load_source(_cfg(source="npz", path=str(path), group_key="patient"))
  with pytest.raises(ValueError, match="'split'.*npz_split=-1"):
    load_source(_cfg(source="npz", path=str(path), npz_split=0))
  np.savez(path, pixels=_rng_images(2, 2, 2, 1), labels=np.array([0, 1]))
  with pytest.raises(ValueError, match="no inputs.*pixels.*image_key"):
    load_source(_cfg(source="npz", path=str(path)))


@pytest.mark.parametrize("labels, match", [
    ([0.6, 1.6, 2.6], r"'labels' of .*3 non-integral or non-finite value\(s\), e\.g\. "
                      r"\[0\.6, 1\.6, 2\.6\].*label_key"),
    ([0.0, np.nan, 1.0],
     r"1 non-integral or non-finite value\(s\), e\.g\. \[nan\] at row\(s\) \[1\]"),
    ([0.0, 1.0, -np.inf], r"\[-inf\] at row\(s\) \[2\]"),
    ([[1, 0], [0, 1], [1, 0]], r"shape \(3, 2\).*argmax"),
    (["nv", "mel", "nv"], r"<U3 values, not class indices.*class_names"),
])
def test_npz_labels_that_are_not_class_indices_are_refused(tmp_path, labels, match):
  path = tmp_path / "l.npz"
  np.savez(path, images=_rng_images(3, 2, 2, 1), labels=np.array(labels))
  with pytest.raises(ValueError, match=match):
    load_source(_cfg(source="npz", path=str(path)))


def test_npz_integral_float_labels_pass(tmp_path):
  path = tmp_path / "f.npz"
  np.savez(path, images=_rng_images(3, 2, 2, 1), labels=np.array([0.0, 2.0, 1.0]))
  ds = load_source(_cfg(source="npz", path=str(path)))
  assert ds.y.dtype == np.int64 and ds.class_names == ("0", "1", "2")
  np.testing.assert_array_equal(ds.y, [0, 2, 1])


def _npy(path):
  with path.open("wb") as f:
    np.save(f, np.zeros(3))


def _damaged_npz(path):
  """A valid npz with one byte of its image data flipped: its CRC no longer matches."""
  np.savez(path, images=_rng_images(6, 10, 10, 3), labels=np.arange(6) % 2)
  data = bytearray(path.read_bytes())
  data[400] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("write, match", [
    (lambda p: p.write_bytes(bytes(256)), "not a readable npz file.*neither an npz"),
    (lambda p: p.write_bytes(b""), "not a readable npz file .it is empty"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(60)), "not a readable npz file .BadZipFile"),
    (_npy, r"one bare array \(\.npy\)"),
    (_damaged_npz, "array 'images' of .* cannot be read .BadZipFile.*damaged"),
    (lambda p: np.savez(p, images=_rng_images(2, 2, 2, 1), labels=np.array([0, 1]),
                        class_names=np.array(["a", None], dtype=object)),
     "array 'class_names' of .* holds Python objects.*plain array"),
])
def test_unreadable_npz_names_the_file_never_allow_pickle(tmp_path, write, match):
  path = tmp_path / "bad.npz"
  write(path)
  with pytest.raises(files.CorruptFile, match=match) as info:
    load_source(_cfg(source="npz", path=str(path)))
  message = str(info.value)
  assert str(path) in message and "allow_pickle" not in message
  # No chained numpy error in the traceback either.
  assert info.value.__cause__ is None
  assert info.value.__suppress_context__ or info.value.__context__ is None


def test_empty_npz_and_csv_are_refused(tmp_path):
  path = tmp_path / "empty.npz"
  np.savez(path, images=np.zeros((0, 2, 2, 1), np.uint8), labels=np.zeros(0, np.int64))
  with pytest.raises(ValueError, match="holds no examples .array 'labels' has no rows"):
    load_source(_cfg(source="npz", path=str(path)))
  with pytest.raises(ValueError, match=r"holds no examples \(only a header.*data.path"):
    load_source(_csv_cfg(tmp_path, "age,dx\n"))
  with pytest.raises(ValueError, match=r"holds no examples \(it is empty"):
    load_source(_csv_cfg(tmp_path, ""))


def test_csv_empty_group_id_is_refused(tmp_path):
  with pytest.raises(ValueError, match="1 data row.* no group id in column 'patient'.*row 1"):
    load_source(_csv_cfg(tmp_path, _CSV.replace("p2,", ","), group_key="patient",
                         categorical="drop"))


@pytest.mark.parametrize("key, value, owner", [
    ("image_dir", "imgs", "csv_images"), ("group_pattern", "^(P\\d+)_", "image_folder"),
    ("group_csv", "groups.csv", "image_folder")])
def test_a_key_of_another_source_is_refused(tmp_path, key, value, owner):
  with pytest.raises(ValueError, match=f"data.{key} is read by source '{owner}' only.*'csv'"):
    load_source(_csv_cfg(tmp_path, **{key: value}))


@pytest.mark.parametrize("source", ["npz", "csv", "image_folder", "csv_images"])
def test_missing_path(tmp_path, source):
  with pytest.raises(FileNotFoundError, match="nope.*data.path"):
    load_source(_cfg(source=source, path=str(tmp_path / "nope")))
  with pytest.raises(FileNotFoundError, match="data.path"):
    load_source(_cfg(source=source, path=""))


# ----------------------------------------------------------------------------- image folder


def _write_folder(root, sizes_by_class, mode="RGB"):
  arrays = {}
  for cls, sizes in sizes_by_class.items():
    (root / cls).mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
      a = _rng_images(1, h, w, 3 if mode == "RGB" else 1, seed=len(arrays))[0]
      Image.fromarray(a if mode == "RGB" else a[..., 0], mode).save(root / cls / f"{i}.png")
      arrays[(cls, i)] = a
  return arrays


def test_image_folder_reads_pngs_exactly(tmp_path):
  arrays = _write_folder(tmp_path / "skin", {"b": [(4, 3)] * 2, "a": [(4, 3)]})
  (tmp_path / "skin" / "a" / "notes.txt").write_text("not an image")
  ds = load_source(_cfg(source="image_folder", path=str(tmp_path / "skin")))
  assert ds.class_names == ("a", "b") and ds.name == "skin"
  np.testing.assert_array_equal(ds.y, [0, 1, 1])
  np.testing.assert_array_equal(ds.x, np.stack([arrays["a", 0], arrays["b", 0], arrays["b", 1]]))


def test_image_folder_grayscale_keeps_one_channel(tmp_path):
  arrays = _write_folder(tmp_path / "xr", {"n": [(3, 3)], "p": [(3, 3)]}, mode="L")
  ds = load_source(_cfg(source="image_folder", path=str(tmp_path / "xr")))
  assert ds.x.shape == (2, 3, 3, 1)
  np.testing.assert_array_equal(ds.x[1], arrays["p", 0])


def test_image_folder_resize_matches_pil(tmp_path):
  _write_folder(tmp_path / "r", {"a": [(5, 7)], "b": [(9, 4)]})
  ds = load_source(_cfg(source="image_folder", path=str(tmp_path / "r"), image_size=6))
  assert ds.x.shape == (2, 6, 6, 3)
  ref = Image.open(tmp_path / "r" / "b" / "0.png").resize((6, 6), Image.Resampling.BILINEAR)
  np.testing.assert_array_equal(ds.x[1], np.asarray(ref))


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
  _write_folder(tmp_path / "r", {"a": [(5, 7)], "b": [(9, 4)]})
  with pytest.raises(ValueError, match="image_size=N"):
    load_source(_cfg(source="image_folder", path=str(tmp_path / "r")))


def test_image_folder_bad_layouts(tmp_path):
  _write_folder(tmp_path / "one", {"a": [(2, 2)]})
  with pytest.raises(ValueError, match="at least 2 classes"):
    load_source(_cfg(source="image_folder", path=str(tmp_path / "one")))
  _write_folder(tmp_path / "e", {"a": [(2, 2)]})
  (tmp_path / "e" / "empty").mkdir()
  with pytest.raises(ValueError, match="empty.*no image files"):
    load_source(_cfg(source="image_folder", path=str(tmp_path / "e")))
  _write_folder(tmp_path / "u", {"a": [(2, 2)], "b": [(2, 2)]})
  (tmp_path / "u" / "b" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="broken.png"):
    load_source(_cfg(source="image_folder", path=str(tmp_path / "u")))


# ----------------------------------------------------------------------------- csv


_CSV = """patient,age,sex,dx
p1,50,F,mel
p2,,M,nv
p3,NA,F,nv
p4,61.5,,bcc
p5,nan,M,mel
"""


def _csv_cfg(tmp_path, text=_CSV, **kw):
  path = tmp_path / "clin.csv"
  path.write_text(text)
  return _cfg(**{"source": "csv", "path": str(path), "label_key": "dx", **kw})


def test_csv_string_labels_nan_and_groups(tmp_path):
  ds = load_source(_csv_cfg(tmp_path, group_key="patient", categorical="drop"))
  assert ds.class_names == ("bcc", "mel", "nv")
  np.testing.assert_array_equal(ds.y, [1, 2, 2, 0, 1])
  np.testing.assert_array_equal(ds.groups, ["p1", "p2", "p3", "p4", "p5"])
  assert ds.feature_names == ("age",) and ds.name == "clin"
  np.testing.assert_array_equal(ds.x[:, 0], np.array([50, np.nan, np.nan, 61.5, np.nan],
                                                     np.float32))


def test_csv_categorical_error_names_columns(tmp_path):
  with pytest.raises(ValueError, match=r"\['patient', 'sex'\].*categorical=drop.*onehot"):
    load_source(_csv_cfg(tmp_path))


def test_csv_categorical_onehot(tmp_path):
  ds = load_source(_csv_cfg(tmp_path, group_key="patient", categorical="onehot"))
  assert ds.feature_names == ("age", "sex=F", "sex=M")
  nan = np.nan
  np.testing.assert_array_equal(ds.x[:, 1:], [[1, 0], [0, 1], [1, 0], [nan, nan], [0, 1]])


def test_csv_int_labels_and_feature_columns(tmp_path):
  text = "a,b,y\n1,2,10\n3,4,2\n5,6,2\n"
  ds = load_source(_csv_cfg(tmp_path, text.replace("y", "dx"), feature_columns="b"))
  assert ds.class_names == ("2", "10")
  np.testing.assert_array_equal(ds.y, [1, 0, 0])
  np.testing.assert_array_equal(ds.x, [[2], [4], [6]])


def test_csv_missing_label_column_lists_columns(tmp_path):
  with pytest.raises(ValueError, match="'diagnosis'.*patient.*age.*label_key"):
    load_source(_csv_cfg(tmp_path, label_key="diagnosis"))


# ----------------------------------------------------------------------------- tfds


def test_tfds_through_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=4):
    ds = load_source(_cfg(source="tfds", name="colorectal_histology", data_dir=str(tmp_path)))
    names = tfds.builder("colorectal_histology").info.features["label"].names
  assert ds.x.shape == (4, 150, 150, 3) and ds.x.dtype == np.uint8
  assert ds.y.shape == (4,) and ds.y.dtype == np.int64
  assert ds.class_names == tuple(names) and len(names) == 8
  assert ds.name == "colorectal_histology"


class _FakeSource(list):
  """What tfds.data_source returns: indexable examples with the builder's dataset_info."""

  dataset_info = None


def fake_tfds(examples_by_split):
  """An `as_data_source_fn` for tfds.testing.mock_data serving these examples per split."""
  def as_data_source(builder, split, **kwargs):
    del kwargs
    source = _FakeSource(examples_by_split[split])
    source.dataset_info = builder.info
    return source
  return as_data_source


def test_tfds_fractional_labels_are_refused(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  examples = [{"id": str(i), "image": np.zeros((32, 32, 3), np.uint8), "label": np.float32(v)}
              for i, v in enumerate([0.0, 1.5, 2.0])]
  with tfds.testing.mock_data(as_data_source_fn=fake_tfds({"train": examples})):
    with pytest.raises(ValueError, match=r"feature 'label' of tfds dataset 'cifar10'.*\[1\.5\]"):
      load_source(_cfg(source="tfds", name="cifar10", data_dir=str(tmp_path)))


def test_tfds_not_prepared_fails_fast(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match=r"'mnist'.*not prepared.*data.download=True"):
    load_source(_cfg(source="tfds", name="mnist", data_dir=str(tmp_path), download=False))
  assert time.monotonic() - start < 10


def test_tfds_failed_download_is_reported(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")

  def offline(*args, **kwargs):
    raise ConnectionError("no network")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(RuntimeError, match="'mnist'.*failed") as info:
    load_source(_cfg(source="tfds", name="mnist", data_dir=str(tmp_path), download=True))
  assert isinstance(info.value.__cause__, ConnectionError)


def test_tfds_unknown_dataset(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ValueError, match="'no_such_set'.*data.name"):
    load_source(_cfg(source="tfds", name="no_such_set", data_dir=str(tmp_path)))


def test_image_size_resizes_array_sources():
  cfg = base_config().data
  cfg.image_size = 16
  ds = load_source(cfg)  # sklearn digits, 8x8 float images
  assert ds.x.shape == (1797, 16, 16, 1) and ds.x.dtype == np.float32
  assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
  # A constant image stays constant; a uint8 image keeps its dtype.
  img = np.full((2, 4, 4, 3), 200, np.uint8)
  np.testing.assert_array_equal(resize_images(img, 8), np.full((2, 8, 8, 3), 200, np.uint8))
