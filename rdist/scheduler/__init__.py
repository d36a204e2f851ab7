"""The scheduler: a pure state machine (``state``) inside a Redis shell (``server``)."""
