"""SVP's ML and data code. Never imports Prefect: orchestration lives in `flows/`."""
