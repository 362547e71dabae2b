"""Readers: turn raw exports into typed batches plus quarantined rows."""
