"""The chat app's cron jobs: count each channel's messages every day at 00:05 UTC."""

from reactive import cron_jobs

from . import stats

crons = cron_jobs()
crons.daily("daily message counts", {"hour_utc": 0, "minute_utc": 5}, stats.count_messages)
