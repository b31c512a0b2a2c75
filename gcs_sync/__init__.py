"""gcs-sync: copy objects uploaded to S3 into Google Cloud Storage buckets, keyless."""

__version__ = "0.1.0"
