"""AI drafting of outreach emails through Anthropic: streamed, with a first-token deadline, a
model chain and a template fallback, stored per user."""
