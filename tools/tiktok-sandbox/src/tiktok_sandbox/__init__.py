"""Strict emulator of TikTok's Content Posting API (v2), with fault injection and inspection."""
