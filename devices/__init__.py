"""wearbus: devices."""
