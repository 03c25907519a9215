"""Suite-wide fixtures."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  The whole suite runs in one process, and every jitted function a test module leaves alive keeps
  its XLA:CPU executables mapped; near the end of the suite the process crashed in the
  unwinder (libgcc) with over a thousand tests' programs resident. Modules share no programs
  worth keeping, and a module that needs one compiles it again.
  """
  yield
  jax.clear_caches()
