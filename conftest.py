"""Tests run on CPU with 8 fake devices; set before jax is imported anywhere."""

import os
import tempfile

# Tests compile hundreds of tiny programs and run each a few times: compilation dominates, so
# LLVM's optimisation passes cost more than they save (a quarter of the zoo tests' time).
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
     "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Identical programs (the same tiny model in many tests and subprocesses) compile once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jimb-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
