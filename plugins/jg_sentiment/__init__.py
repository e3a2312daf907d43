"""Feedback sentiment: a classifier on MiniLM embeddings trained on real labelled sentences,
feedback scored from its sentences, and a time-decayed sentiment in the visitor's profile.

Modules: ``data`` (labelled sentences), ``model`` (the classifier), ``scoring`` (long and
mixed texts, themes, micro-batching), ``evaluation`` (held-out accuracy), ``training`` (the
commands), ``settings`` (``[plugin.sentiment]``), ``plugin`` (the hooks).
"""
