"""Adapters to a Navidrome server: its database read-only, its Subsonic API, playlists.

- `database`: `navidrome.db` opened read-only (tracks, plays, stars, ratings);
- `subsonic`: the Subsonic API client (the same data over HTTP, and writes);
- `playlists`: results written as a user's Navidrome playlist.
"""
