"""The one waterfall: which provider to ask, in what order, and when to stop, for search and
bulk enrichment alike."""
