"""Shared test fixtures' building blocks: a database and broker names of the run's own."""
