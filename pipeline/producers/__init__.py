"""Producers: filesystem watcher, Navidrome scan, re-embed replay, scheduler."""
