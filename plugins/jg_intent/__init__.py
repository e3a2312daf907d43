"""The first-party intent scorer: journey stage and intent tier from explainable rules.

Registered through the ``journeygate`` entry-point group like any third-party plugin.
"""
