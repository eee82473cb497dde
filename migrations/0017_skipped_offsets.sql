-- Offsets a start moved a partition's head past (reserved before an unclean stop under HERALD_FSYNC=interval
-- or never, or known only to a lost index.db): the start logs them once; delivery then passes over them
-- without a line per subscription that calls them lost events (upgrade probe: an error line per subscription
-- and partition after every SIGKILL under interval, for offsets that never held an event).
CREATE TABLE skipped_offsets (
  partition   INTEGER NOT NULL,
  from_offset INTEGER NOT NULL,
  to_offset   INTEGER NOT NULL,
  PRIMARY KEY (partition, from_offset)
) WITHOUT ROWID;
