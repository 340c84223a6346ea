"""Everything Reelay knows about TikTok's Content Posting API: models, client, chunk plans, uploads."""
