"""Test support: fakes at the network edge, the tiny model, shared helpers."""
