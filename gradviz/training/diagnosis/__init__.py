"""Where a NaN/Inf started: the backward graph kept until its gradients are checked, the
forward replayed op by op, and the origin named by its op, module and the user's line."""
