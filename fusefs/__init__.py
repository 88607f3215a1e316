"""The FUSE mount and its per-runtime views (not built yet)."""
