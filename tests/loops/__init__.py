"""The loop zoo: training loops written the way their communities write them, watched by
gradviz and held up against the numbers the loops compute themselves (see harness.py)."""
