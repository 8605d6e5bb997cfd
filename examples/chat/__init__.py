"""A chat app: channels and messages (the example of DESIGN.md §1)."""
