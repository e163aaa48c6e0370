"""Helpers shared by the queue, worker and crash tests."""
