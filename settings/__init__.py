"""Settings: the one loader every entry point builds its config dataclasses with (settings.loader)."""
