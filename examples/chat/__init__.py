"""A chat app: channels, messages (expiring, with images), a daily cron and HTTP routes."""
