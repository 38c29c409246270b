-- The claim writes its state events by lease token; without this index every
-- claim scanned the whole history.
CREATE INDEX topups_lease_owner ON topups (lease_owner) WHERE lease_owner IS NOT NULL;
