"""Screens over the main one: help, the scenario picker, the run view of a record."""
