"""Command-line tools of qvla_core (console scripts)."""
