"""Operations: the sweeper, the nightly backfill, dead letters, migrations and the operator log."""
