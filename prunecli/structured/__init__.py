"""Structured pruning (``prune.granularity: channel``): whole channels, units and heads
removed and a smaller dense model rebuilt. ``graph`` finds the coupled channels, ``groups``
scores them and chooses the survivors, ``rebuild`` writes the narrower model, ``pruner``
holds whole-channel masks during gradual schedules, ``stage`` hooks it all into the
pipeline."""
