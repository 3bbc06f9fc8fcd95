"""PulseMind app package."""
