"""Keeping the Python process healthy around huge autograd graphs: GC pauses, stack
sizes for freeing deep graphs, the worker thread torch work runs on. Standard library
only: every other package may import this one."""
