"""Touchpoint events: the schema (journeygate's own and Segment's), ingestion into Redis
Streams, and the worker that applies them to profiles and sessions."""
