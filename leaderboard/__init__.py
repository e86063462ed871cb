"""The audio leaderboard (issue 21): entries of models benchmarked under a named, versioned threat model
(``entry.schema.json``) and the pages that show them side by side (``page.py``)."""
