"""PyTorch's own engines, paused: the backward stepper (its facade, its events, the
hooks on the engine's hot path), the forward stepper and its op-by-op recording,
why-no-grad, tensor summaries and the threads backward runs on."""
