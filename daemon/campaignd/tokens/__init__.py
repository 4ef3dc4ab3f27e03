"""Signed tokens: unsubscribe and tracking links, VERP return paths. Pure HMAC, no HTTP."""
