"""Helpers of the app tests: one launched app per test process, small data, a tiny router."""
