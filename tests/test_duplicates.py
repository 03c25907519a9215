"""Duplicate detection checked against hand cases and brute-force NumPy over all pairs."""

from __future__ import annotations

import io
import json
import time

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets, model_selection

from jimb.data import content_hash, duplicates
from jimb.data.dataset import Dataset
from jimb.data.splits import Fold, make_folds


def _natural_images(n, size=64, seed=0):
  """Random colour images with the 1/f amplitude spectrum of natural scenes."""
  f = np.fft.fftfreq(size)
  radius = np.hypot(f[:, None], f[None, :])
  amplitude = np.divide(1, radius, out=np.zeros_like(radius), where=radius > 0)
  noise = np.random.default_rng(seed).normal(size=(n, size, size, 3))
  images = np.fft.ifft2(np.fft.fft2(noise, axes=(1, 2)) * amplitude[..., None], axes=(1, 2)).real
  images /= images.std(axis=(1, 2, 3), keepdims=True)
  return np.clip(128 + 40 * images, 0, 255).astype(np.uint8)


def _digits(size=64):
  """sklearn's 8x8 handwritten digits (16 gray levels), enlarged to natural-looking strokes."""
  d = datasets.load_digits()
  small = (d.images * 255 / 16).astype(np.uint8)
  big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                  for im in small])
  return big[..., None], d.target


def _pil(image):
  return Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)


def _array(im, channels):
  out = np.asarray(im.convert("L" if channels == 1 else "RGB"))
  return out[..., None] if channels == 1 else out


def _altered(image, size=60, shift=10, quality=60):
  """The same picture resized, brightened and saved again as a lower-quality JPEG."""
  im = _pil(image).resize((size, size), Image.BILINEAR)
  brighter = np.clip(np.asarray(im, np.int16) + shift, 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(brighter).save(buffer, "JPEG", quality=quality)
  return _array(Image.open(io.BytesIO(buffer.getvalue())), image.shape[-1])


def _resized(image, size):
  """What a loader with --config.data.image_size=size makes of an image of another size."""
  return _array(_pil(image).resize((size, size), Image.BILINEAR), image.shape[-1])


def _dataset(x, y=None, groups=None, names=("cat", "dog")):
  y = np.zeros(len(x), np.int64) if y is None else np.asarray(y, np.int64)
  return Dataset(x, y, names, groups=None if groups is None else np.asarray(groups))


def _hand_images():
  """A, B, copy of A, C, altered A, D, copy of D: duplicate groups {0, 2, 4} and {5, 6}."""
  a, b, c, d = _natural_images(4, seed=1)
  return np.stack([a, b, a, c, _resized(_altered(a), 64), d, d])


def _brute_force_pairs(x, near_distance):
  """Every pair (i < j) with its kind: 'exact' (same bytes) or 'near' (hashes close)."""
  flat = x.reshape(len(x), -1)
  h = content_hash.image_hashes(x)
  i, j = np.triu_indices(len(x), 1)
  exact = np.all(flat[i] == flat[j], axis=1)
  dist = np.bitwise_count(h[i] ^ h[j])
  near = ~exact & (dist <= near_distance)
  return i, j, exact, near, dist


def test_exact_duplicates_found_wherever_they_are():
  x = np.random.default_rng(0).integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
  x[0] = x[29] = x[13]
  x[7] = x[8]
  for images in (x, x.astype(np.float32) / 255):
    dup = duplicates.find(_dataset(images))
    groups = {tuple(np.flatnonzero(dup.exact == e)) for e in np.unique(dup.exact)}
    assert {g for g in groups if len(g) > 1} == {(0, 13, 29), (7, 8)}
    assert dup.exact_pairs == 3 + 1 and dup.near_pairs == 0
    assert dup.num_involved == 5 and dup.num_groups == 2
    assert dup.component[[0, 13, 29]].tolist() == [0, 0, 0] and dup.component[7] == 1


def test_altered_copy_is_a_near_duplicate():
  """JPEG at quality 60, 64 -> 60 pixels and +10 gray levels keep the hash within 4 bits."""
  for images in (_natural_images(40, seed=2), _digits()[0][:40]):
    copies = [_altered(im) for im in images]
    h = content_hash.image_hashes(images)
    h_copy = np.concatenate([content_hash.image_hashes(c[None]) for c in copies])
    assert np.bitwise_count(h ^ h_copy).max() <= 4
    # The same, once a loader has brought the copies back to the dataset's size.
    dup = duplicates.find(_dataset(np.concatenate([images, [_resized(c, 64) for c in copies]])))
    pairs = {tuple(p) for p in dup.near.tolist()}
    assert {(k, k + 40) for k in range(40)} <= pairs and dup.exact_pairs == 0


def test_different_images_are_not_near_duplicates():
  dup = duplicates.find(_dataset(_natural_images(600, seed=3)))
  assert dup.exact_pairs == 0 and dup.near_pairs == 0, dup.near[:5]
  # sklearn's 8x8 digits as jimb loads them: a few pairs of one digit's nearly identical
  # drawings come within 4 bits, never two different digits.
  d = datasets.load_digits()
  x = (d.images * 255 / 16).astype(np.uint8)[..., None]
  dup = duplicates.find(_dataset(x, d.target, names=tuple("0123456789")))
  first = np.unique(dup.exact, return_index=True)[1]
  labels = d.target[first[dup.near]]
  assert dup.exact_pairs == 0 and 0 < dup.near_pairs < 1e-4 * len(x) ** 2 / 2
  assert np.all(labels[:, 0] == labels[:, 1])


def test_table_rows_exact_only_with_nan_alike():
  other_nan = np.array([0x7FC00001], np.uint32).view(np.float32)[0]
  x = np.array([[1, np.nan, 3], [5, 6, 7], [-0.0, 2, 2], [1, np.nan, 3], [0.0, 2, 2],
                [1, other_nan, 3], [1, 2, 3.0000002], [1, 2, 3]], np.float32)
  dup = duplicates.find(_dataset(x), near_distance=10)
  assert dup.near_distance is None and len(dup.near) == 0
  assert dup.exact.tolist() == [0, 1, 2, 0, 2, 0, 3, 4]
  assert dup.exact_pairs == 3 + 1 and dup.component.tolist() == [0, -1, 1, 0, 1, 0, -1, -1]


def test_components_hand_case():
  pairs = np.array([[0, 3], [3, 5], [6, 1], [5, 0], [7, 7]])
  assert content_hash.components(8, pairs).tolist() == [0, 1, 2, 0, 4, 0, 1, 7]
  assert content_hash.components(3, np.zeros((0, 2))).tolist() == [0, 1, 2]
  dup = duplicates.find(_dataset(_hand_images()))
  assert dup.component.tolist() == [0, -1, 0, -1, 0, 1, 1]
  assert dup.exact_pairs == 2 and dup.near_pairs == 2  # (0, 4) and (2, 4)
  assert dup.num_involved == 5 and dup.num_groups == 2


@pytest.mark.parametrize("block", [997, content_hash._BLOCK])
@pytest.mark.parametrize("spread", [True, False])
@pytest.mark.parametrize("near_distance", [0, 1, 4, 9])
def test_near_pairs_match_all_pairs(spread, near_distance, block, monkeypatch):
  """Banded search (spread hashes) and the all-pairs fallback (clustered) against brute force,
  in one block of candidates or many."""
  monkeypatch.setattr(content_hash, "_BLOCK", block)
  rng = np.random.default_rng(near_distance)
  h = rng.integers(0, 2**64, 1500, dtype=np.uint64, endpoint=False)
  if not spread:
    h &= np.uint64(0xFF)  # 256 values at most: every band's buckets are crowded
  flips = rng.integers(0, 64, (300, 3)).astype(np.uint64)
  near = h[:300] ^ np.bitwise_or.reduce(np.uint64(1) << flips, axis=1)
  h = np.concatenate([h, near, h[:20]])  # close pairs and exact repeats
  pairs, dist = content_hash.near_pairs(h, near_distance)
  i, j = np.triu_indices(len(h), 1)
  d = np.bitwise_count(h[i] ^ h[j])
  keep = d <= near_distance
  np.testing.assert_array_equal(pairs, np.stack([i[keep], j[keep]], 1))
  np.testing.assert_array_equal(dist, d[keep])


def test_straddling_matches_brute_force():
  rng = np.random.default_rng(4)
  base = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
  copies = base[rng.integers(0, 60, 50)]
  edited = base[rng.integers(0, 60, 60)].copy()
  for im in edited:  # a few pixels changed: some hashes move 0-4 bits, some more
    im[rng.integers(0, 8, 2), rng.integers(0, 8, 2), 0] = rng.integers(0, 256, 2)
  x = np.concatenate([base, copies, edited, copies[:10]])[rng.permutation(180)]
  dup = duplicates.find(_dataset(x), near_distance=4)
  order = rng.permutation(len(x))
  fold = Fold(3, *(np.sort(p) for p in (order[:100], order[100:125], order[125:175])))
  report = duplicates.straddling(dup, fold)
  part = np.full(len(x), -1)  # 5 examples are in no part and count nowhere
  part[fold.train], part[fold.val], part[fold.test] = 0, 1, 2
  i, j, exact, near, dist = _brute_force_pairs(x, 4)
  assert report["fold"] == 3 and exact.sum() == dup.exact_pairs and near.sum() == dup.near_pairs
  assert near.sum() > 20 and exact.sum() > 20
  names = {"train": 0, "val": 1, "test": 2}
  for key in ("train-val", "train-test", "val-test", "train", "val", "test"):
    p, q = (names[k] for k in (key.split("-") * 2)[:2])
    between = ((part[i] == p) & (part[j] == q)) | ((part[i] == q) & (part[j] == p))
    assert report[key]["exact"] == (between & exact).sum(), key
    assert report[key]["near"] == (between & near).sum(), key
    for a, b in report[key]["exact_examples"]:
      assert part[a] == p and part[b] == q and a != b and np.array_equal(x[a], x[b])
    for a, b, d in report[key]["near_examples"]:
      k = np.flatnonzero((i == min(a, b)) & (j == max(a, b)))
      assert len(k) == 1 and near[k[0]] and dist[k[0]] == d and part[a] == p and part[b] == q
    assert len(report[key]["exact_examples"]) == min(5, report[key]["exact"])


def test_with_groups_merges_existing_groups_and_duplicates():
  x = _hand_images()
  dup = duplicates.find(_dataset(x))
  # C (3) shares patient p5 with D (5), so D's copy joins C's group too.
  ds = _dataset(x, groups=["p1", "p1", "p2", "p5", "p4", "p5", "p6"])
  merged = duplicates.with_groups(ds, dup)
  assert merged.groups.tolist() == ["p1", "p1", "p1", "p5", "p1", "p5", "p5"]
  no_groups = duplicates.with_groups(_dataset(x), dup)
  assert no_groups.groups.tolist() == ["0", "1", "0", "3", "0", "5", "5"]
  numbered = duplicates.with_groups(_dataset(x, groups=[10, 9, 8, 7, 6, 5, 4]), dup)
  assert numbered.groups.tolist() == ["6", "9", "6", "7", "6", "4", "4"]
  unique = _dataset(_natural_images(5, seed=5))
  assert duplicates.with_groups(unique, duplicates.find(unique)) is unique
  with pytest.raises(ValueError, match="find them on the dataset being split"):
    duplicates.with_groups(_dataset(x[:5]), dup)


def test_grouped_folds_never_split_duplicates():
  rng = np.random.default_rng(6)
  images = _natural_images(240, seed=6)
  y = rng.integers(0, 2, 240)
  pick = rng.choice(240, 60, replace=False)
  altered = [_resized(_altered(im), 64) for im in images[pick[30:]]]
  x = np.concatenate([images, images[pick[:30]], altered])
  y = np.concatenate([y, y[pick[:30]], y[pick[30:]]])
  ds = _dataset(x, y)
  dup = duplicates.find(ds)
  assert dup.exact_pairs == 30 and dup.near_pairs >= 30

  def across(folds):
    reports = [duplicates.straddling(dup, f) for f in folds]
    return sum(r[k]["exact"] + r[k]["near"] for r in reports
               for k in ("train-val", "train-test", "val-test"))

  assert across(make_folds(ds, folds=3, val_fraction=0.2, seed=0)) > 0
  grouped = duplicates.with_groups(ds, dup)
  assert across(make_folds(grouped, folds=3, val_fraction=0.2, seed=0)) == 0
  splitter = model_selection.StratifiedGroupKFold(4, shuffle=True, random_state=1)
  folds = [Fold(k, train, np.zeros(0, np.int64), test) for k, (train, test)
           in enumerate(splitter.split(x, y, grouped.groups))]
  assert across(folds) == 0
  for f in folds:
    side = np.isin(np.arange(len(x)), f.test)
    for c in range(dup.num_groups):
      assert len(set(side[dup.component == c])) == 1


def test_policies_and_messages():
  x = np.random.default_rng(7).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
  x[5] = x[0]
  x[9] = x[8]
  ds = _dataset(x, y=[0, 1, 0, 1, 0, 0, 1, 0, 1, 0])
  dup = duplicates.find(ds)
  fold = Fold(0, np.arange(5), np.zeros(0, np.int64), np.arange(5, 10))
  with pytest.raises(ValueError) as error:
    duplicates.check(dup, [fold], "error")
  text = str(error.value)
  for part in ("fold 0: 1 exact and 0 near duplicate pairs across parts", "1 train-test",
               "train 0 ('cat') = test 5 ('cat')", "--config.data.duplicates=group",
               "deduplicate the data"):
    assert part in text, text
  assert "near_distance" not in text  # no near pair leaks, so no advice about them
  with pytest.raises(ValueError, match="fixed split"):
    duplicates.check(dup, [fold], "group")
  hand = duplicates.find(_dataset(_hand_images()))
  split = Fold(0, np.array([0, 1, 3, 5]), np.zeros(0, np.int64), np.array([2, 4, 6]))
  with pytest.raises(ValueError, match=r"2 exact and 1 near .* train 0 \('cat'\) ~ test 4 "
                                       r"\('cat'\) \(\d bits\).*near_distance"):
    duplicates.check(hand, [split], "error")
  line = duplicates.check(dup, [fold], "warn")
  assert line.startswith("2 exact and 0 near duplicate pairs") and "fold 0: 1 train-test" in line
  assert "\n" not in line and duplicates.check(dup, [fold], "off") == ""
  inside = Fold(1, np.array([0, 5, 1, 2]), np.array([3, 4]), np.array([6, 7, 8, 9]))
  assert "no pair straddles" in duplicates.check(dup, [inside], "error")
  with pytest.raises(ValueError, match="choose warn"):
    duplicates.check(dup, [fold], "ignore")
  with pytest.raises(ValueError, match="near_distance must lie in"):
    duplicates.find(ds, near_distance=65)
  summary = json.loads(json.dumps(duplicates.summary(dup, [fold, inside])))
  assert summary["exact_pairs"] == 2 and summary["exact_examples"] == [[0, 5], [8, 9]]
  assert summary["folds"][0]["train-test"]["exact"] == 1
  assert summary["folds"][1]["train"]["exact"] == 1 and summary["folds"][1]["test"]["exact"] == 1
  assert summary["exact_pairs_with_different_labels"] == 1 and summary["largest_group"] == 2


def test_twenty_thousand_images_sanity():
  """Not a timed assertion: prints the time, and checks that planted duplicates are found."""
  rng = np.random.default_rng(8)
  x = rng.integers(20, 230, (20000, 16, 16, 1), dtype=np.uint8)
  x[19990:] = x[:10]
  x[19980:19990] = x[10:20] + 3  # brighter copies: the same hashes
  start = time.perf_counter()
  dup = duplicates.find(_dataset(x))
  seconds = time.perf_counter() - start
  h = rng.integers(0, 2**64, 60000, dtype=np.uint64, endpoint=False)
  start = time.perf_counter()
  content_hash.near_pairs(h, 4)
  print(f"find on 20000 16x16 images: {seconds:.2f} s; "
        f"near_pairs on 60000 hashes: {time.perf_counter() - start:.2f} s")
  assert dup.exact_pairs == 10 and dup.near_pairs == 10 and dup.num_groups == 20
