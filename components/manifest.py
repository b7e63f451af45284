"""The manifest's schema (`data/manifest/manifest.parquet`, `data/validated/*.parquet`): one row
per sample; the README's "Manifest schema" table explains each column. Media paths are stored as
`components.paths.to_stored` writes them."""

from __future__ import annotations

import pyarrow as pa

MANIFEST_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("layout", pa.string()),
    ("identity", pa.string()),
    ("emotion", pa.string()),
    ("level", pa.int32()),
    ("clip", pa.string()),
    ("style_group", pa.string()),
    ("split", pa.string()),
    ("video_path", pa.string()),
    ("audio_path", pa.string()),
    ("audio_source", pa.string()),
    ("sidecar_path", pa.string()),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("n_frames", pa.int32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("video_codec", pa.string()),
    ("audio_sample_rate", pa.int32()),
    ("audio_channels", pa.int32()),
    ("audio_duration_s", pa.float64()),
    ("audio_dbfs", pa.float64()),
    ("content_hash", pa.string()),
    ("probe_error", pa.string()),
    ("layout_problem", pa.string()),
])
