"""PostgreSQL: tables, engine, and the transactions the service runs."""
