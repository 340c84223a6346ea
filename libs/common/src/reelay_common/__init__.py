"""Reelay's shared library: messages, settings, logging, errors, TikTok client, Kafka and Mongo helpers."""
