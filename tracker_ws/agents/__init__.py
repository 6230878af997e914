"""Faust agents: thin adapters from topics to the pure core and the bus."""
