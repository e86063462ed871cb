"""Work in progress (being written this session)."""
