"""campaignctl: validate, preview, plan, lint and the API-backed control commands."""
