"""Behavioral triggers: cart abandonment, repeated interest, dwell, search signals, churn risk,
post-purchase follow-ups, high-value buyers and unhappy feedback, sent as signed webhooks.

Registered through the ``journeygate`` entry-point group like any third-party plugin.
"""
