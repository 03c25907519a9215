"""Every import points down: no jimb module imports from a floor above its own (README, Layout).

Floors, lowest first; a module may import its own floor only within its own package, except on
the core floor, whose modules are small and acyclic.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOORS = (
    ("core", ("jimb.config", "jimb.registry", "jimb.mesh", "jimb.checkpointing", "jimb.files",
              "jimb.multihost", "jimb.lock", "jimb.metrics", "jimb.stats", "jimb.distributed",
              "jimb.tracking", "jimb.calibration", "jimb.compiler", "jimb.conv")),
    ("libraries", ("jimb.data", "jimb.models", "jimb.losses", "jimb.resampling",
                   "jimb.generative")),
    ("fitting", ("jimb.fitting",)),
    ("balance", ("jimb.balance",)),
    ("training", ("jimb.training",)),
    ("report", ("jimb.report", "jimb.workdir", "jimb.render")),
    ("experiment", ("jimb.experiment",)),
    ("sweep", ("jimb.sweep",)),
)


def _unit(module: str) -> tuple[int, str]:
  """(floor, unit) of a jimb module: the unit is the package or core module it belongs to."""
  for floor, (_, units) in enumerate(FLOORS):
    for unit in units:
      if module == unit or module.startswith(unit + "."):
        return floor, unit
  raise AssertionError(f"{module} is on no floor: add it to FLOORS (and to the README's Layout)")


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, module) of every jimb import in the file, function-level ones included."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names if a.name.startswith("jimb")]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jimb"):
      # `from jimb import x` names module jimb.x; `from jimb.a import b` may name a or a.b.
      out += [(node.lineno, f"{node.module}.{a.name}" if node.module == "jimb" else node.module)
              for a in node.names]
  return out


FILES = sorted((ROOT / "jimb").rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
  module = _module(path)
  if module == "jimb":
    return
  floor, unit = _unit(module)
  for line, target in _imports(path):
    target_floor, target_unit = _unit(target)
    where = f"{path.relative_to(ROOT)}:{line} imports {target}"
    assert target_floor <= floor, (
        f"{where}: floor {FLOORS[target_floor][0]} is above {FLOORS[floor][0]}")
    if target_floor == floor and floor > 0:
      assert target_unit == unit, f"{where}: a sibling on floor {FLOORS[floor][0]}"


def test_the_floors_cover_the_package():
  units = {u for _, group in FLOORS for u in group}
  for path in FILES:
    module = _module(path)
    if module != "jimb":
      assert _unit(module)[1] in units
