"""A scenario stepped as the app shows it: scenario files and the demo catalog, the
session (forward, backward, optimizer step, each a transition of its state) and what
it hands the screen as plain data."""
