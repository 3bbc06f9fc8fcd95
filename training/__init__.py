"""PulseMind training package."""
