"""Device descriptions (one TOML per board) and the loader that builds a Device from one."""
