"""One fold's training: setup on its training part, the checkpointed epoch loop, evaluation,
and the decoupled stage 2 (heads)."""
