"""``gradviz.watch`` around the user's own training loop: per-iteration statistics,
audits, breaks, where a NaN started, and the record's writing side."""
