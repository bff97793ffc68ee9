"""A training run as :func:`gradviz.watch` records it: the file's format, its events
(kinds, NaN origins, breaks), the run read back as plain data, and the report."""
