"""Bundled labelled sentences for the neurofeedback paradigm (JSON)."""
