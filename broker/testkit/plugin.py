"""The wearbus pytest plugin (registered by entry point; fixtures land with the test kit)."""
