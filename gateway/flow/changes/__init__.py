"""The change feed: what changed in one entity since a cursor, under the client's policy
(docs/changes.md). Framework-free; the HTTP routes are in ``gateway.web.routes.changes``."""

from gateway.flow.changes.feed import ChangeFeed, FeedLimits, FeedQuery, Page

__all__ = ["ChangeFeed", "FeedLimits", "FeedQuery", "Page"]
