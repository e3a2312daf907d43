"""Personas: customers clustered by purchase behaviour, and rule-based segments.

``journeygate segment`` computes recency-frequency-monetary and behavioural features per
customer of an Online Retail file (:mod:`jg_personas.features`), clusters them with K-means and
names every cluster from its centroid (:mod:`jg_personas.clustering`), publishes the model
(:mod:`jg_personas.model`) and writes each customer's persona to their profile
(:mod:`jg_personas.commands`). At decision time the plugin (:mod:`jg_personas.plugin`) sets the
visitor's ``segment``: the first matching rule segment of ``[plugin.personas]``
(:mod:`jg_personas.segments`), else the persona.
"""
