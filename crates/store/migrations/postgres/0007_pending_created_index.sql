-- The oldest PENDING row (queue monitor, /health, metrics) is read every
-- second; without this index it walks the whole history by creation time.
CREATE INDEX topups_pending_created ON topups (created_at) WHERE status = 'PENDING';
