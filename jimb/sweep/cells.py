"""The cells of a sweep: a config file's `sweep(arg)` generator expanded into named configs.

A config file may define, beside `get_config(arg)`, a generator `sweep(arg)` that yields one dict
of overrides per cell (`{"loss.name": "focal", "imbalance.ratio": 10}`), as kauldron does. Keys
starting with "_" are labels, not config keys:
  _name    the cell's name and folder (default: its overrides, "ratio=10,loss.name=focal");
  _method  what the sweep's tables compare (default: the name);
  _task    what they rank within, e.g. a scenario or a data set (default: one task for all).
Each cell is the base config (with the command line's --config.* overrides) plus its own.

Cells that differ only in post-hoc keys (stage 2, feature-space resampling, report, calibration,
decision rule) share their stage-1 training: they form one `Job`, whose stage 1 is trained once
and each of whose cells is then evaluated on its checkpoints (experiment.evaluate), as seed
001's study re-uses stage 1.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import re
from typing import Any, Iterable

import ml_collections

from jimb import config as config_lib

LABELS = ("_name", "_method", "_task")
# Keys that never change what stage 1 trains (experiment.evaluate may change them).
POST_HOC_BLOCKS = ("stage2", "resample.feature", "report", "calibration", "decision")
POST_HOC = tuple(b + "." for b in POST_HOC_BLOCKS)
_MAX_NAME = 100


@dataclasses.dataclass(frozen=True)
class Cell:
  index: int                  # position in the sweep: the tables keep the sweep's order
  name: str
  overrides: dict[str, Any]   # config keys only
  method: str
  task: str
  config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Job:
  """One schedulable unit: train `stage1` (its config) once, then evaluate each post-hoc cell."""

  name: str                   # the stage-1 folder under the sweep's workdir
  stage1: ml_collections.ConfigDict
  cells: tuple[Cell, ...]


def load_sweep(config_file: str) -> list[dict[str, Any]]:
  """The override dicts of `path[:arg]`'s `sweep(arg)`; the path as --config takes it."""
  path, _, arg = config_file.partition(":")
  spec = importlib.util.spec_from_file_location("jimb_sweep_config", path)
  if spec is None:
    raise FileNotFoundError(f"no config file {path!r}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} defines no sweep(arg); add a generator that yields dicts of "
                     "overrides, e.g. yield {'loss.name': 'focal'}, or use --mode=train")
  items = list(module.sweep(arg or None))
  if not items:
    raise ValueError(f"{path}'s sweep({arg!r}) yields no cells")
  return items


def expand(base: ml_collections.ConfigDict, items: Iterable[dict[str, Any]]) -> list[Cell]:
  """Named cells, in the sweep's order; two cells with one name are an error."""
  cells, seen = [], {}
  for i, item in enumerate(items):
    if not isinstance(item, dict):
      raise ValueError(f"sweep item {i} is {type(item).__name__}; yield dicts of overrides")
    unknown = [k for k in item if k.startswith("_") and k not in LABELS]
    if unknown:
      raise ValueError(f"sweep item {i}: unknown label(s) {unknown}; labels are {LABELS}")
    overrides = {k: v for k, v in item.items() if not k.startswith("_")}
    name = safe_name(str(item["_name"])) if "_name" in item else default_name(overrides)
    if name in seen:
      raise ValueError(f"sweep items {seen[name]} and {i} are both named {name!r}; give them "
                       "distinct overrides or _name labels")
    seen[name] = i
    config = config_lib.override(base, overrides, where=f"sweep cell {name!r}")
    try:
      config_lib.validate(config)
    except ValueError as e:
      raise ValueError(f"sweep cell {name!r}: {e}") from None
    cells.append(Cell(i, name, overrides, str(item.get("_method", name)), str(item.get("_task", "")),
                      config))
  return cells


def default_name(overrides: dict[str, Any]) -> str:
  """"key=value,..." with each key shortened to its shortest unambiguous dotted suffix."""
  if not overrides:
    return "base"
  keys = list(overrides)
  short = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if sum(k == suffix or k.endswith("." + suffix) for k in keys) == 1:
        break
    short[key] = suffix
  return safe_name(",".join(f"{short[k]}={_text(v)}" for k, v in overrides.items()))


def _text(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (list, tuple)):
    return "-".join(_text(v) for v in value)
  return str(value)


def safe_name(name: str) -> str:
  """A folder name: path separators and spaces replaced, long names shortened by a digest."""
  out = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name).strip("._") or "_"
  if len(out) > _MAX_NAME:
    out = out[:_MAX_NAME - 13] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
  return out


def _flat_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return config_lib.flatten(json.loads(config.to_json_best_effort()))


def _post_hoc(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {k: v for k, v in _flat_json(config).items() if k.startswith(POST_HOC)}


def _stage1_key(config: ml_collections.ConfigDict) -> str:
  """Every key but the post-hoc ones: cells with equal keys share one stage 1."""
  return json.dumps({k: v for k, v in _flat_json(config).items() if not k.startswith(POST_HOC)},
                    sort_keys=True, default=str)


def stage1_config(config: ml_collections.ConfigDict,
                  base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with its post-hoc blocks as in `base`: what its shared stage 1 trains."""
  out = copy.deepcopy(config)
  with out.unlocked():
    for block in POST_HOC_BLOCKS:
      *path, last = block.split(".")
      _get(out, ".".join(path))[last] = copy.deepcopy(_get(base, block))
  return out


def jobs(cells: list[Cell], base: ml_collections.ConfigDict) -> list[Job]:
  """Cells grouped by stage 1. A group's folder is named after its training cell (the one whose
  post-hoc keys are the base's) or, when it has none, "stage1-<first cell>"."""
  groups: dict[str, list[Cell]] = {}
  for cell in cells:
    groups.setdefault(_stage1_key(cell.config), []).append(cell)
  base_post_hoc = _post_hoc(base)
  out = []
  for group in groups.values():
    trained = [c for c in group if _post_hoc(c.config) == base_post_hoc]
    if trained:
      out.append(Job(trained[0].name, trained[0].config, tuple(group)))
    else:
      out.append(Job(safe_name(f"stage1-{group[0].name}"), stage1_config(group[0].config, base),
                     tuple(group)))
  return out


def trains(job: Job, cell: Cell) -> bool:
  """Whether `cell` is its job's stage 1 itself (its results are the training run's)."""
  return cell.name == job.name


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for p in filter(None, key.split(".")):
    node = node[p]
  return node
