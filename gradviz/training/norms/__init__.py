"""What one iteration measured: per-parameter gradient, parameter and update norms and the
total norm read in one host sync, and under sharding (FSDP2, DTensor) the same norms of
the whole parameters, combined across ranks with one small collective."""
