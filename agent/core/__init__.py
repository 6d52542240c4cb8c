"""wearbus: agent/core."""
