"""The chat example, end to end on the embedded SQLite default.

Opens (or creates) the database, creates a channel, subscribes to its latest messages, sends
messages from another task and prints what the live subscription sees after each commit.

Run: python examples/chat_demo.py [--db sqlite:///.reactive/chat.sqlite3]
"""

import argparse
import asyncio
import sys
from pathlib import Path

import reactive

HERE = Path(__file__).resolve().parent


async def main(db_url: str) -> None:
    async with reactive.open(db_url, app=HERE / "chat") as db:
        print(f"opened {db_url}: tables {[t['name'] for t in db._engine.tables()]}")
        try:
            await db.mutation("channels:create", {"name": "general"})
            print("created channel #general")
        except reactive.ConvexError as exc:
            print(f"channel #general exists already ({exc.data})")
        async with db.subscribe("messages:list", {"channel": "general", "limit": 3}) as live:
            first = await live.get(timeout_s=5)
            print(f"subscription: #general has {len(first)} recent message(s)")

            async def sender() -> None:
                for i, body in enumerate(["hello", "is anyone here?", "reactive works"]):
                    await asyncio.sleep(0.05)
                    msg_id = await db.mutation(
                        "messages:send", {"channel": "general", "author": "ada", "body": body}
                    )
                    print(f"  commit {i + 1}: sent {body!r} as {msg_id}")
                await db.mutation(
                    "messages:send", {"channel": "random", "author": "bob", "body": "elsewhere"}
                )
                print("  commit 4: sent to #random (the #general subscription must not re-run)")

            task = asyncio.create_task(sender())
            for _ in range(3):
                update = await live.get(timeout_s=5)
                bodies = [m["body"] for m in update]
                print(f"subscription update: latest in #general = {bodies}")
            await task
            try:
                await live.get(timeout_s=0.3)
                print("unexpected update")
            except TimeoutError:
                print(f"no update for the #random commit; the query ran {live.runs} times")
        report = await db.check()
        print(
            f"check: {report['documents']} documents, {report['index_entries']} index entries, "
            f"{len(report['problems'])} problems"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite:///.reactive/chat.sqlite3")
    asyncio.run(main(parser.parse_args().db))
    sys.exit(0)
