"""SyncNet: lip-sync confidence and distance (Sync-C / Sync-D), trained or loaded."""
