"""Webhook deliveries: Standard Webhooks signing, the SSRF guard, the retry schedule and one-attempt sender."""
