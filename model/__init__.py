"""PulseMind model package."""
