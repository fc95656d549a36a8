"""Inference logs: every served row journaled, compacted into hive-partitioned Parquet, queried with DuckDB."""
