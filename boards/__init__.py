"""Board profiles: one TOML file per board, loaded by hal.board."""
