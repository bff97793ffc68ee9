"""Reading what autograd built, without running it: the walk of ``grad_fn`` /
``next_functions`` into a networkx DAG, saved tensors, compiled and checkpointed
regions, which module made each node, and export to DOT, SVG, PNG and JSON."""
