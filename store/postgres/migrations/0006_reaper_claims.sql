-- The reaper's claim on an output it is deleting ('' queued, 'deleting',
-- 'deleted'; see store.ClaimDoomed): references to a claimed output are
-- refused.
ALTER TABLE doomed_objects ADD COLUMN state text NOT NULL DEFAULT '';
