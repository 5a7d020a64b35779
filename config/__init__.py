"""Settings and rule files, read once at start-up."""
