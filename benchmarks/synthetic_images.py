"""Whether finished runs' synthetic images look like the real ones of their class, pixel by pixel.

  python benchmarks/synthetic_images.py ../shared/data/images/pneumoniamnist_28x28.npz \
      runs/pn_ddpm runs/pn_dcgan

FID and k-NN precision / recall (each run's synthesis/fold_*/samples_*/report.json) live in a
judge's features; two failures show plainer in pixels. Noise: the share of synthetic images
rougher than every real image of their class (roughness: the mean absolute difference of
horizontally plus that of vertically neighbouring pixels). Brightness: the mean and spread over
images of each image's mean pixel value, which a generator blind to global intensity gets wrong
(jimb/generative/unet.py: group_count). The real images are the npz's split `--split` of the
class (all its images, a superset of any fold's training part); images in [0, 1].
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np


def roughness(images: np.ndarray) -> np.ndarray:
  """(N,) mean |horizontal neighbour difference| + mean |vertical neighbour difference|."""
  return (np.abs(np.diff(images, axis=1)).mean(axis=(1, 2, 3))
          + np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3)))


def row(name: str, images: np.ndarray, noisy: str) -> str:
  brightness = images.mean(axis=(1, 2, 3))
  return (f"| {name} | {len(images)} | {brightness.mean():.3f} +- {brightness.std():.3f} | "
          f"{np.median(roughness(images)):.3f} | {noisy} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("npz", help="the real images: images (N, H, W, C) uint8, labels, split")
  parser.add_argument("workdirs", nargs="+", help="finished runs with synthetic samples")
  parser.add_argument("--split", type=int, default=0, help="the npz split the runs trained on")
  args = parser.parse_args()
  samples_of = {w: sorted(pathlib.Path(w).glob("synthesis/fold_*/samples_*/samples.npz"))
                for w in args.workdirs}
  for workdir, found in samples_of.items():
    if not found:
      raise SystemExit(f"{workdir} holds no synthesis/fold_*/samples_*/samples.npz: pass the "
                       "--workdir of a finished run with a synth.method (its synth.cache_dir "
                       "if it set one)")
  data = np.load(args.npz)
  names = [str(n) for n in data["class_names"]]
  chosen = data["split"] == args.split
  print("| images | n | brightness (mean +- sd over images) | median roughness | noisy |")
  print("|---|---|---|---|---|")
  for c in range(len(names)):
    real = data["images"][chosen & (data["labels"] == c)].astype(np.float32) / 255.0
    printed = False
    for workdir, found in samples_of.items():
      for path in found:
        samples = np.load(path)
        synthetic = samples["x"][samples["y"] == c]
        if not len(synthetic):
          continue
        if not printed:
          print(row(f"real {names[c]}", real, "-"))
          printed = True
        noisy = np.mean(roughness(synthetic) > roughness(real).max())
        print(row(f"{workdir} {path.parts[-3]} {names[c]}", synthetic, f"{100 * noisy:.1f} %"))


if __name__ == "__main__":
  main()
