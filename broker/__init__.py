"""wearbus: broker."""
