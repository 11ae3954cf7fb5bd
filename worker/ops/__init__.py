"""Operations: the sweeper, the nightly backfill and their scheduled tasks, dead letters,
migrations and the operator log."""
