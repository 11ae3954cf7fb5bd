"""One module per platform endpoint (plus the admin API); each exposes ENDPOINT or handle()."""
