"""Scenarios shipped with wearbus (YAML files read with importlib.resources)."""
