"""The recorder: the record stream to Parquet files by IST day (`shared.recording`)."""
