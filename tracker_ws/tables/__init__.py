"""Faust table definitions (changelog-backed, co-partitioned with gps-events)."""
