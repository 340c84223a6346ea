"""Test support for Reelay's suites: fakes named Fake*, bounded waits, topic readers (dev only)."""
