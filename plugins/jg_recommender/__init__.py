"""The first-party recommender plugin: implicit ALS + sentence-transformer content embeddings.

Registered through the ``journeygate`` entry-point group like any third-party plugin.
"""
