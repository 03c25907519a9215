"""Joining a multi-process run: one JAX process per host, every device of every host in one mesh.

`initialize` must run before anything touches a JAX device. Explicit settings (coordinator
address, process count, process id) serve any launcher; `auto` lets JAX read them from the
cluster's environment (SLURM, Open MPI, Cloud TPU VMs, Kubernetes), and any explicit setting
overrides what it detects.

A coordinator port must belong to one run. The coordination service binds it with
SO_REUSEPORT, so a second run's coordinator binds the same port without an error, and the two
runs' processes then join each other's service: the first run aborts, often mid-training, with
"<task> unexpectedly tried to connect with a different incarnation". JAX derives the SLURM port
from the job id alone, so two job steps on one node (or a simulated SLURM environment reused)
share it; here the step id takes part too, and the coordinator checks that its port is free.
"""

from __future__ import annotations

import errno
import os
import socket
import zlib

import jax

# JAX's SLURM ports: 4096 ports at the top of the ephemeral range.
_SLURM_PORTS = (65535 - 2**12 + 1, 2**12)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Joins the multi-process run described by the arguments; without any, does nothing.

  Without `auto` the three settings are all required; with it, those given override what JAX
  detects from the cluster's environment. Raises ValueError naming an inconsistent setting.
  """
  given = {k: v for k, v in (("coordinator_address", coordinator_address),
                             ("num_processes", num_processes),
                             ("process_id", process_id)) if v is not None}
  if not auto and not given:
    return
  check_settings(coordinator_address, num_processes, process_id, auto)
  # Collectives between the CPU devices of different processes (other backends ignore it).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if auto and coordinator_address is None and "JAX_COORDINATOR_PORT" not in os.environ:
    port = slurm_step_port(os.environ)
    if port is not None:
      os.environ["JAX_COORDINATOR_PORT"] = str(port)
  port = _port(coordinator_address, os.environ)
  if port is not None and _is_coordinator(process_id, os.environ):
    check_port_free(port)
  jax.distributed.initialize(**given)


def check_settings(coordinator_address: str | None, num_processes: int | None,
                   process_id: int | None, auto: bool) -> None:
  """Raises ValueError for settings that cannot describe one multi-process run."""
  missing = [f"--{name}" for name, value in (("coordinator_address", coordinator_address),
                                            ("num_processes", num_processes),
                                            ("process_id", process_id)) if value is None]
  if missing and not auto:
    raise ValueError(f"a multi-process run needs {', '.join(missing)} as well (every process "
                     "gets the same --coordinator_address and --num_processes and its own "
                     "--process_id), or --distributed to read them from the cluster's environment")
  if coordinator_address is not None:
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"--coordinator_address={coordinator_address!r} must be host:port, e.g. "
                       "10.0.0.1:12345 (process 0's host and a port no other run uses)")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes={num_processes} must be at least 1")
  if process_id is not None and process_id < 0:
    raise ValueError(f"--process_id={process_id} must be at least 0")
  if process_id is not None and num_processes is not None and process_id >= num_processes:
    raise ValueError(f"--process_id={process_id} is out of range for --num_processes="
                     f"{num_processes}; number the processes 0 to {num_processes - 1}")


def slurm_step_port(env) -> int | None:
  """A coordinator port of this SLURM job step, or None outside SLURM (no SLURM_JOB_ID).

  Every process of a step derives the same port; concurrent steps of one job derive different
  ones (JAX's own choice, job id % 4096, is the same for all of them).
  """
  if "SLURM_JOB_ID" not in env:
    return None
  key = f"{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '')}"
  first, count = _SLURM_PORTS
  return first + zlib.crc32(key.encode()) % count


def _port(coordinator_address: str | None, env) -> int | None:
  """The coordinator's port, where it is known before JAX reads the cluster's environment."""
  if coordinator_address is not None:
    return int(coordinator_address.rpartition(":")[2])
  return int(env["JAX_COORDINATOR_PORT"]) if "JAX_COORDINATOR_PORT" in env else None


def _is_coordinator(process_id: int | None, env) -> bool:
  """Whether this process will run the coordination service (process 0)."""
  if process_id is not None:
    return process_id == 0
  return env.get("SLURM_PROCID") == "0"


def check_port_free(port: int) -> None:
  """Raises RuntimeError when the coordinator's `port` is held by another program on this host.

  A free port binds here without SO_REUSEPORT; one held by another run's coordination service
  (which binds with it) does not, where the service itself would have bound silently.
  """
  try:
    if socket.has_dualstack_ipv6():
      probe = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
      probe = socket.create_server(("", port))
  except OSError as e:
    if e.errno != errno.EADDRINUSE:
      raise
    raise RuntimeError(
        f"the coordinator port {port} is in use on this host, most likely by the coordination "
        "service of another run (a concurrent one, or an earlier one still shutting down). Two "
        "runs on one port join each other and abort with 'unexpectedly tried to connect with a "
        "different incarnation'. Give this run its own port: --coordinator_address=HOST:PORT "
        "with a free PORT, or JAX_COORDINATOR_PORT=PORT with --distributed") from None
  probe.close()
