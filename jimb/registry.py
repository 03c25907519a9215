"""Name -> factory registries, so adding a model, loss or sampler is one file, not a loop edit."""

from __future__ import annotations

import inspect
from typing import Any, Callable


class Registry:
  """A named table of factories; `build` validates config keys against the factory signature."""

  def __init__(self, kind: str, factories: dict[str, Callable[..., Any]] | None = None):
    self.kind = kind
    self._table: dict[str, Callable[..., Any]] = dict(factories or {})

  def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(factory):
      if name in self._table:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._table[name] = factory
      return factory
    return decorator

  def names(self) -> list[str]:
    return sorted(self._table)

  def get(self, name: str, config_key: str = "") -> Callable[..., Any]:
    """The factory `name`; an unknown name is an error listing the known ones (and naming the
    config key that chose it)."""
    if name not in self._table:
      where = f"; set --config.{config_key} to one of" if config_key else "; choose one of"
      raise ValueError(f"unknown {self.kind} {name!r}{where} {self.names()}")
    return self._table[name]

  def build(self, name: str, options: dict[str, Any], **fixed: Any) -> Any:
    """Calls factory `name` with `fixed` arguments and the user's `options`.

    An option the factory does not take is an error naming it, so a misspelt
    config key cannot silently fall back to a default.
    """
    factory = self.get(name)
    # A class's metaclass may hide its constructor's signature: read __init__ directly.
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [p for p in params if p not in fixed and p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
      raise ValueError(
          f"{self.kind} {name!r} has no option(s) {unknown}; it takes {accepted}")
    return factory(**fixed, **options)
