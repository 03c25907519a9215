"""The leak of balancing before splitting: seed 000's protocol against jimb's, same model and budget.

  python benchmarks/leak_demo.py                   # HAM10000 28x28, 3 folds, 10 epochs (CPU, ~3 min)
  python benchmarks/leak_demo.py --min_count 0 --epochs 10   # balance to the majority (accelerator)

A (leaky, seed 000): the WHOLE set is balanced first, every class below `min_count` (0: the
majority's count) topped up with copies of its own images, each flipped or turned by a quarter
(a fixed seed), then split by image in stratified k-fold, ungrouped and unchecked for
duplicates (--config.data.duplicates=off). Copies of a test image, and the other images of its
lesion, sit in the training part, and copies are tested on too.
B (honest, jimb): stratified k-fold grouped by lesion_id; each training part alone is topped up
by DuplicateToMinimum to A's share of the budget (min_count * (1 - 1/folds) * (1 - val_fraction)
rows per class); testing on untouched real images.

Both train the same small CNN with the same focal loss, flip / rotation augmentation, epochs and
batch through jimb.experiment.train_and_evaluate. Metrics are those of the pooled out-of-fold
predictions (each fold's test_probs.npz); A is scored on all its test rows, as the seed does,
and on its real test images alone. The leak is counted per test image: a copy in its fold's
training part (pixel-identical, and up to a flip or quarter turn, both by jimb's exact-duplicate
detection) and a lesion sibling there.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
from sklearn import metrics as skm

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jimb import files  # pylint: disable=g-import-not-at-top,wrong-import-position
from jimb.config import base_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from jimb.data import content_hash  # pylint: disable=g-import-not-at-top,wrong-import-position

HAM = ROOT.parent / "shared/data/images/ham10000_28x28_rgb.npz"


def dihedral(images: np.ndarray, k: np.ndarray) -> np.ndarray:
  """Image i turned by k[i] % 4 quarter turns, then mirrored left-right when k[i] >= 4."""
  out = np.empty_like(images)
  for t in range(8):
    rows = np.flatnonzero(k == t)
    turned = np.rot90(images[rows], t % 4, axes=(1, 2))
    out[rows] = turned[:, :, ::-1] if t >= 4 else turned
  return out


def canonical(images: np.ndarray) -> np.ndarray:
  """The same representative for every flip and quarter turn of an image: a copy made by
  `dihedral` and its source become exact duplicates, so exact-duplicate detection finds it."""
  variants = np.stack([dihedral(images, np.full(len(images), t)) for t in range(8)], 1)
  flat = variants.reshape(len(images), 8, -1)
  keys = np.array([[v.tobytes() for v in row] for row in flat], dtype=object)
  best = np.array([min(range(8), key=row.__getitem__) for row in keys])
  return variants[np.arange(len(images)), best]


def balance_whole(images, labels, groups, min_count: int, seed: int):
  """Seed 000's first step on the whole set: every class below min_count (0: the majority's
  count) gets copies of its images drawn with replacement, each flipped or turned (never the
  identity). Returns images, labels, groups and each row's source row (itself for real rows)."""
  counts = np.bincount(labels)
  target = min_count or counts.max()
  rng = np.random.default_rng(seed)
  source = [np.arange(len(labels))]
  for c, n in enumerate(counts):
    if n < target:
      source.append(rng.choice(np.flatnonzero(labels == c), target - n, replace=True))
  source = np.concatenate(source)
  turn = np.where(source == np.arange(len(source)), 0, rng.integers(1, 8, len(source)))
  return dihedral(images[source], turn), labels[source], groups[source], source


def leaky_npz(path, data: dict, min_count: int, seed: int) -> np.ndarray:
  """Writes A's balanced set (images, labels, class_names, lesion_id) to `path`; returns the
  source row of each of its rows."""
  x, y, g, source = balance_whole(data["images"], data["labels"], data["lesion_id"], min_count,
                                  seed)
  np.savez(path, images=x, labels=y, class_names=data["class_names"], lesion_id=g)
  return source


def config(args, npz: str, leaky: bool):
  """The one model / budget both protocols train; only the split and where balancing runs differ."""
  c = base_config()
  c.seed = args.seed
  c.data.update(dict(source="npz", path=npz, group_key="" if leaky else "lesion_id",
                     duplicates="off" if leaky else "warn"))
  c.split.update(dict(folds=args.folds, val_fraction=args.val_fraction, only_folds=""))
  c.augment.update(dict(enabled=True, hflip=True, vflip=True, rotation=20.0, brightness=0.0,
                        contrast=0.0, saturation=0.0, hue=0.0))
  c.loss.update(dict(name="focal", gamma=2.0, alpha=0.25))
  c.model.name = "small_cnn"
  c.model.small_cnn = dict(widths=tuple(args.widths), dense=64, dropout=0.25, batch_norm=True)
  c.optim.update(dict(name="adam", learning_rate=1e-3))
  c.train.update(dict(batch_size=args.batch_size, epochs=args.epochs, select_metric="macro_f1"))
  c.report.update(dict(bootstrap=0, figures=False, progress="off", tensorboard=False))
  if not leaky:
    c.resample.image.name = "DuplicateToMinimum"
    c.resample.image.min_count = honest_min_count(args, args.min_count_resolved)
  return c


def honest_min_count(args, min_count: int) -> int:
  """A's per-class rows in a training part: its share of the whole-set budget."""
  return max(1, round(min_count * (1 - 1 / args.folds) * (1 - args.val_fraction)))


def fold_parts(workdir: pathlib.Path) -> list[dict]:
  """Each fold's train / test indices and test probabilities, as the runner saved them."""
  out = []
  for fold_dir in sorted(workdir.glob("fold_*")):
    parts = files.read_npz(fold_dir / "indices.npz")
    probs = files.read_npz(fold_dir / "test_probs.npz")
    out.append({"train": parts["train"], "test": probs["index"], "labels": probs["labels"],
                "pred": probs["probs"].argmax(-1)})
  return out


def leaks(parts: list[dict], images: np.ndarray, groups: np.ndarray) -> dict:
  """Test images with a pixel-identical copy, a flipped / turned copy, or a lesion sibling in
  their fold's training part (exact groups from jimb.data.content_hash, as duplicates.find)."""
  exact = content_hash.exact_groups(images)
  turned = content_hash.exact_groups(canonical(images))
  out = {"test": 0, "pixel_copy": 0, "turned_copy": 0, "lesion_sibling": 0}
  for p in parts:
    train, test = p["train"], p["test"]
    out["test"] += len(test)
    out["pixel_copy"] += int(np.isin(exact[test], exact[train]).sum())
    out["turned_copy"] += int(np.isin(turned[test], turned[train]).sum())
    out["lesion_sibling"] += int(np.isin(groups[test], groups[train]).sum())
  return out


def scores(parts: list[dict], keep=None) -> dict:
  """Pooled out-of-fold macro-F1, balanced accuracy and per-class recall (rows `keep` only)."""
  y = np.concatenate([p["labels"] for p in parts])
  pred = np.concatenate([p["pred"] for p in parts])
  if keep is not None:
    mask = np.concatenate([keep(p["test"]) for p in parts])
    y, pred = y[mask], pred[mask]
  classes = np.unique(y)
  return {"macro_f1": skm.f1_score(y, pred, average="macro"),
          "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
          "recall": skm.recall_score(y, pred, labels=classes, average=None), "n": len(y)}


def run(args, npz: str, workdir: pathlib.Path, leaky: bool) -> float:
  """Trains and evaluates one protocol with jimb's runner; returns its seconds."""
  from jimb import experiment  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  log = print if args.verbose else (lambda line: None)
  experiment.train_and_evaluate(config(args, npz, leaky), str(workdir), log=log)
  return time.perf_counter() - start


def table(rows: dict, class_names) -> str:
  head = f"{'protocol':<24}{'n test':>8}{'macro-F1':>10}{'bal.acc':>9}" + "".join(
      f"{str(n):>7}" for n in class_names)
  lines = [head, "-" * len(head)]
  for name, s in rows.items():
    lines.append(f"{name:<24}{s['n']:>8}{s['macro_f1']:>10.4f}{s['balanced_accuracy']:>9.4f}"
                 + "".join(f"{r:>7.3f}" for r in s["recall"]))
  a, b = rows["A leaky (all test rows)"], rows["B honest"]
  lines.append(f"{'gap A - B':<24}{'':>8}{a['macro_f1'] - b['macro_f1']:>+10.4f}"
               f"{a['balanced_accuracy'] - b['balanced_accuracy']:>+9.4f}"
               + "".join(f"{r:>+7.3f}" for r in a["recall"] - b["recall"]))
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--npz", default=str(HAM), help="HAM10000 npz (images, labels, lesion_id)")
  parser.add_argument("--min_count", type=int, default=800,
                      help="rows per class after balancing the whole set (seed 000's rule of "
                      "800; 0: the majority's count)")
  parser.add_argument("--folds", type=int, default=3)
  parser.add_argument("--val_fraction", type=float, default=0.1)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="", help="keep both runs here ('' = a temporary folder)")
  parser.add_argument("--compilation_cache", default="", help="persistent XLA cache folder")
  parser.add_argument("--verbose", action="store_true", help="print the runner's log")
  args = parser.parse_args(argv)
  if args.compilation_cache:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)

  with np.load(args.npz, allow_pickle=False) as f:
    data = {k: f[k] for k in ("images", "labels", "class_names", "lesion_id")}
  args.min_count_resolved = args.min_count or int(np.bincount(data["labels"]).max())
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(args.workdir or tmp)
    root.mkdir(parents=True, exist_ok=True)
    leaky_path = root / "leaky_balanced.npz"
    source = leaky_npz(leaky_path, data, args.min_count_resolved, args.seed)
    seconds = {"A": run(args, str(leaky_path), root / "leaky", True),
               "B": run(args, args.npz, root / "honest", False)}
    with np.load(leaky_path, allow_pickle=False) as f:
      leaky_images, leaky_groups = f["images"], f["lesion_id"]
    a, b = fold_parts(root / "leaky"), fold_parts(root / "honest")
    real = lambda index: source[index] == index
    rows = {"A leaky (all test rows)": scores(a), "A leaky (real test only)": scores(a, real),
            "B honest": scores(b)}
    found = {"A leaky": leaks(a, leaky_images, leaky_groups),
             "B honest": leaks(b, data["images"], data["lesion_id"])}

  counts = np.bincount(data["labels"])
  print(f"data: {args.npz} {len(counts)} classes, counts {counts.tolist()}; A balances the whole "
        f"set to >= {args.min_count_resolved} per class ({len(source)} rows), B each training part "
        f"to >= {honest_min_count(args, args.min_count_resolved)} per class")
  print(f"model: small_cnn widths {args.widths}, focal loss, {args.epochs} epochs, batch "
        f"{args.batch_size}, {args.folds} folds; seconds A {seconds['A']:.0f}, B {seconds['B']:.0f}")
  print("\npooled out-of-fold test metrics (recall per class):")
  print(table(rows, data["class_names"]))
  print("\ntest images whose fold's training part holds a copy or a lesion sibling:")
  print(f"{'protocol':<12}{'test':>8}{'pixel copy':>12}{'turned copy':>13}{'lesion sibling':>16}")
  for name, n in found.items():
    print(f"{name:<12}{n['test']:>8}{n['pixel_copy']:>12}{n['turned_copy']:>13}"
          f"{n['lesion_sibling']:>16}")


if __name__ == "__main__":
  main()
