"""The HTTP service (`sonicbus serve`): an edge over the bus and the store.

- `app`: the FastAPI application and its endpoints;
- `runtime`: the long-lived parts behind them (lag sampling, the bus follower,
  replay watcher, the query client);
- `bridge`: the older HTTP recommendation API, answered over the bus.
"""
