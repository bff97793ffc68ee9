"""Keep freeing a deep autograd graph from crashing the process.

Once Python has wrapped an autograd Node (as any walk through ``next_functions``
does), PyTorch >= 2.13 frees that node through the wrapper's deallocator, one C
stack frame chain per node: a 50,000-node chain overflows the default 8 MiB
main-thread stack when the user's last reference goes (measured here: about 180
bytes per node on torch 2.15; PyTorch's own iterative ``deleteNode`` is bypassed).
We cannot change who frees the graph or when, so after each walk we make sure the
main thread's stack may grow far enough: on Linux the main stack grows on demand
up to the soft ``RLIMIT_STACK``, which a process may raise at run time up to the
hard limit. Worker threads that gradviz starts get large stacks of their own
(see :data:`WORKER_STACK_BYTES`).

Known limit: a graph freed on a thread the user started with a small fixed stack,
or on a platform without ``resource`` (Windows), is not protected.
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # Windows: no rlimits to raise.
    resource = None

#: Stack budgeted per node: several times the measured cost, for nodes that also
#: free saved tensors and Python-defined Functions through their wrappers.
BYTES_PER_NODE = 1024
_BASE_BYTES = 16 << 20

#: Stack size for threads gradviz starts that may drop the last reference to a graph.
WORKER_STACK_BYTES = 512 << 20


def stack_bytes_needed(node_count: int) -> int:
    """Main-thread stack that freeing a walked graph of ``node_count`` nodes may use."""
    return _BASE_BYTES + node_count * BYTES_PER_NODE


def ensure_stack_for(node_count: int) -> bool:
    """Raise the soft stack limit so that freeing ``node_count`` walked nodes is safe.

    Only ever raises, only as far as needed, never beyond the hard limit; a no-op
    for graphs that fit the current limit. Returns whether the limit now suffices.
    """
    need = stack_bytes_needed(node_count)
    if resource is None:
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return True
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_STACK, (target, hard))
    except (ValueError, OSError):
        return False
    return target >= need
