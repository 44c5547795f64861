"""Instruction semantics and timing per core (pipeline rules, latencies, issue)."""
