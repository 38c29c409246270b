-- The id of the HTTP request that accepted a top-up, so its logs can be
-- followed from the API through the worker to the upstream call.
ALTER TABLE topups ADD COLUMN request_id TEXT;
