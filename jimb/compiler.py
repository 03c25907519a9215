"""XLA compiler options by backend: what each kind of program needs on CPU, measured there.

Accelerators keep XLA's defaults. The options change how fast (or with how much memory) a
program runs or compiles; only `init_options` touches numbers, the last bit of a few initial
weights.
"""

from __future__ import annotations

import jax


def backward_options() -> dict[str, str] | None:
  """Options for programs with a backward pass.

  XLA:CPU expands the optimisation barriers of `jax.checkpoint` before its first CSE and fusion
  passes, which then merge the recomputation back into the forward pass, so rematerialisation
  (the memory-efficient DenseNet) saved nothing on CPU. Skipping that expansion keeps the
  barriers to code generation, as XLA:GPU and TPU do. Without barriers in the program it changes
  nothing.
  """
  if jax.default_backend() == "cpu":
    return {"xla_disable_hlo_passes": "cse_barrier_expander"}
  return None


def init_options() -> dict[str, str] | None:
  """Options for programs that build models and optimizer states, which run once.

  XLA:CPU spent as long optimising the random-number code of a model's initialisation as the
  training step's (1.3 s of the small CNN's 3 s, 4 s for the test GANs) for a program that runs
  once; unoptimised it compiles in a fraction of that. The draws are integer threefry arithmetic,
  but LLVM contracts and vectorises the float code that shapes them differently, so a few percent
  of the initial weights differ in their last bit (tests/test_compiler.py): a run is as
  reproducible as before, and its numbers are those of this initialisation.
  """
  if jax.default_backend() == "cpu":
    return {"xla_backend_optimization_level": "0"}
  return None
