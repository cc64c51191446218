"""Signed webhooks: subscriptions to a feed (``gateway.flow.changes``), one signed POST per
change to an operator-allowed URL, retried with backoff until delivered or dead-lettered
(docs/changes.md). Framework-free; routes in ``gateway.web.routes.webhooks``."""

from gateway.flow.webhooks.store import WebhookStore
from gateway.flow.webhooks.targets import Targets
from gateway.flow.webhooks.worker import Deliverer, DeliveryRetry

__all__ = ["Deliverer", "DeliveryRetry", "Targets", "WebhookStore"]
