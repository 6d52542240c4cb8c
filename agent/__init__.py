"""wearbus: agent."""
