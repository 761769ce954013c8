"""Bundled instruction sets (JSON) for the refusal/harmfulness harness."""
