"""The state of a batch: the store (the only module that speaks SQL), its numbered
migrations, manifest sync, the read-only status snapshot, and the one-run-per-folder lock."""
