"""Preprocessing statistics against scikit-learn/NumPy fitted on the training part only."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from jimb.config import base_config
from jimb.data import preprocess


def data_cfg(**values):
  cfg = base_config().data
  cfg.update(values)
  return cfg


def table_parts(seed=0):
  """A training table with NaN and a constant column, and a test table far off its range."""
  rng = np.random.default_rng(seed)
  train = rng.normal(size=(40, 4)).astype(np.float32) * [1, 5, 0.1, 1] + [0, 3, -2, 0]
  train[:, 3] = 7.0
  train[[1, 5, 9], 0] = np.nan
  train[[2, 3], 2] = np.nan
  test = (rng.normal(size=(10, 4)) * 100 + 1000).astype(np.float32)
  test[[0, 4], 1] = np.nan
  return train.astype(np.float32), test


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_table_standard_scaling_matches_sklearn_fitted_on_train_only(strategy):
  train, test = table_parts()
  prep = preprocess.fit_preprocessor(train, data_cfg(impute=strategy), is_image=False)
  imputer = SimpleImputer(strategy=strategy).fit(train)
  scaler = StandardScaler().fit(imputer.transform(train))
  np.testing.assert_allclose(prep.mean, scaler.mean_, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(prep.std, scaler.scale_, rtol=1e-5)
  assert prep.std[3] == 1.0  # constant column
  host = prep.host(test)
  assert host.dtype == np.float32
  np.testing.assert_allclose(host, imputer.transform(test), rtol=1e-6)
  np.testing.assert_allclose(preprocess.normalize(jnp.asarray(host), prep.mean, prep.std),
                             scaler.transform(imputer.transform(test)), rtol=1e-4)


def test_test_part_does_not_move_the_statistics():
  train, test = table_parts()
  prep = preprocess.fit_preprocessor(train, data_cfg(impute="median"), is_image=False)
  mean, std = prep.mean.copy(), prep.std.copy()
  host = prep.host(test)
  # Test NaN filled with the training median, not with the test part's own (~1000).
  np.testing.assert_allclose(host[[0, 4], 1], np.nanmedian(train[:, 1]), rtol=1e-6)
  filled = np.where(np.isnan(train), np.nanmedian(train, axis=0), train)
  np.testing.assert_allclose(prep.mean, filled.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(prep.mean, mean)
  np.testing.assert_array_equal(prep.std, std)


def test_table_minmax_matches_sklearn():
  train, test = table_parts()
  prep = preprocess.fit_preprocessor(train, data_cfg(impute="mean", normalize="minmax"), False)
  imputer = SimpleImputer(strategy="mean").fit(train)
  scaler = MinMaxScaler().fit(imputer.transform(train))
  np.testing.assert_allclose(prep.mean, scaler.data_min_, rtol=1e-6)
  np.testing.assert_allclose(prep.std, np.where(scaler.data_range_ == 0, 1, scaler.data_range_),
                             rtol=1e-5)
  np.testing.assert_allclose(
      preprocess.normalize(jnp.asarray(prep.host(test)), prep.mean, prep.std),
      scaler.transform(imputer.transform(test)), rtol=1e-4)


def test_table_none_keeps_values():
  train, _ = table_parts()
  prep = preprocess.fit_preprocessor(np.nan_to_num(train), data_cfg(normalize="none"), False)
  np.testing.assert_array_equal(prep.mean, np.zeros(4))
  np.testing.assert_array_equal(prep.std, np.ones(4))
  assert prep.imputer is None


def test_nan_without_imputation_names_columns_and_fix():
  train, test = table_parts()
  names = ("age", "bmi", "ldl", "site")
  with pytest.raises(ValueError, match=r"0 \(age\), 2 \(ldl\).*--config.data.impute=median"):
    preprocess.fit_preprocessor(train, data_cfg(), is_image=False, feature_names=names)
  prep = preprocess.fit_preprocessor(np.nan_to_num(train), data_cfg(), is_image=False)
  with pytest.raises(ValueError, match=r"column\(s\) 1;.*--config.data.impute=median"):
    prep.host(test)


def test_images_dataset_statistics_of_train_part_only():
  rng = np.random.default_rng(1)
  train = rng.integers(0, 200, size=(300, 3, 2, 3), dtype=np.uint8)  # > one stats chunk
  test = np.full((5, 3, 2, 3), 255, np.uint8)
  prep = preprocess.fit_preprocessor(train, data_cfg(normalize="dataset"), is_image=True)
  pixels = train.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(prep.mean, pixels.mean(0), rtol=1e-5)
  np.testing.assert_allclose(prep.std, pixels.std(0), rtol=1e-4)
  assert prep.mean.dtype == prep.std.dtype == np.float32 and prep.mean.shape == (3,)
  host = prep.host(test)
  assert host.dtype == np.float32 and np.all(host == 1.0)
  floats = train.astype(np.float32) / 255
  np.testing.assert_array_equal(prep.host(floats), floats)


def test_images_imagenet_and_none_constants():
  x = np.zeros((2, 4, 4, 3), np.uint8)
  rgb = preprocess.fit_preprocessor(x, data_cfg(normalize="imagenet"), is_image=True)
  np.testing.assert_allclose(rgb.mean, [0.485, 0.456, 0.406])
  np.testing.assert_allclose(rgb.std, [0.229, 0.224, 0.225])
  grey = preprocess.fit_preprocessor(x[..., :1], data_cfg(normalize="imagenet"), is_image=True)
  np.testing.assert_allclose(grey.mean, [(0.485 + 0.456 + 0.406) / 3], rtol=1e-6)
  np.testing.assert_allclose(grey.std, [(0.229 + 0.224 + 0.225) / 3], rtol=1e-6)
  none = preprocess.fit_preprocessor(x, data_cfg(normalize="none"), is_image=True)
  np.testing.assert_array_equal(none.mean, np.zeros(3))
  np.testing.assert_array_equal(none.std, np.ones(3))
  with pytest.raises(ValueError, match="--config.data.normalize=dataset"):
    preprocess.fit_preprocessor(np.zeros((2, 4, 4, 4), np.uint8), data_cfg(normalize="imagenet"),
                                is_image=True)


def test_constant_image_channel_gets_unit_std():
  x = np.zeros((4, 2, 2, 1), np.float32)
  prep = preprocess.fit_preprocessor(x, data_cfg(), is_image=True)
  np.testing.assert_array_equal(prep.std, [1.0])


def test_bad_images_and_settings_raise():
  x = np.full((2, 2, 2, 3), 0.5, np.float32)
  prep = preprocess.fit_preprocessor(x, data_cfg(), is_image=True)
  bad = x.copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN or inf"):
    prep.host(bad)
  with pytest.raises(ValueError, match="NaN or inf"):
    preprocess.fit_preprocessor(bad, data_cfg(), is_image=True)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    prep.host(x * 3)
  with pytest.raises(ValueError, match="--config.data.normalize"):
    preprocess.fit_preprocessor(x, data_cfg(normalize="minmax"), is_image=True)
  with pytest.raises(ValueError, match="--config.data.impute"):
    preprocess.fit_preprocessor(x[:, 0, 0], data_cfg(impute="zero"), is_image=False)
  with pytest.raises(ValueError, match="do not match"):
    prep.host(x[..., :1])
