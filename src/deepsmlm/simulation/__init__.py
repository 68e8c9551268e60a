"""Scenes (structures, blinking), backgrounds and the simulator that composes them."""
