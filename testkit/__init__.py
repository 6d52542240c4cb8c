"""The wearbus pytest plugin and topic-level test kit."""
