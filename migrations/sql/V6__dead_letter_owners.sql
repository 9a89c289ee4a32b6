-- Dead letters name their tenant and their event's commit time.
--
-- A parked event is an event the read models do not reflect. Freshness must say so to the
-- tenant whose message it is (and only to that tenant: another tenant's read models are
-- complete), with the age of the event itself, not of the parking. The projector fills
-- both columns from the event it parks; rows parked before this migration are filled from
-- the event store when it shares the database (a read-model database of its own keeps
-- them NULL: such rows count for no tenant until retried or skipped).

ALTER TABLE dead_letters
    ADD COLUMN tenant_id uuid,
    ADD COLUMN recorded_at timestamptz;

UPDATE dead_letters d
   SET tenant_id = CASE
           WHEN e.metadata->>'tenant_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
           THEN (e.metadata->>'tenant_id')::uuid
       END,
       recorded_at = e.recorded_at
  FROM events e
 WHERE e.global_position = d.global_position;

CREATE INDEX dead_letters_tenant_idx ON dead_letters (version, tenant_id)
    WHERE state IN ('parked', 'held');
