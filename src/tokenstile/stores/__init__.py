"""Implementations of the core store interfaces: SQL (SQLite, PostgreSQL) and Redis."""
