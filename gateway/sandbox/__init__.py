"""An embedded CiviCRM emulator (APIv4 and APIv3 basics on SQLite) and its HTTP wire server."""
