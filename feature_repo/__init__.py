"""feature_repo stage (built by a later issue; see ../shared/ARCHITECTURE.md)."""
