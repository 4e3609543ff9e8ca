"""Spark jobs: raw landing zone -> bronze -> silver -> gold Delta tables."""
