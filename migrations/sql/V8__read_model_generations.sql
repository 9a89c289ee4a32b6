-- Read-model generations: which shape of the read models this schema needs.
--
-- A later migration that changes a read model (a new rollup level, a column the projector
-- fills, a new way of counting) ends with
--
--     SELECT herald_read_model_changed('what changed and why');
--
-- which raises the required generation. Projectors compare it with the generation of the
-- active read-model version; when the active one is older, one projector builds a new
-- version of the required generation from the event store beside the live one (queries
-- keep reading the old one), switches queries to it once it has caught up, and retires the
-- old version after a grace period. No operator step: the migration is the declaration.
--
-- Every existing version is generation 1, which is what this schema requires: upgrading to
-- this migration rebuilds nothing.

CREATE TABLE read_model_generation (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    required   int         NOT NULL CHECK (required > 0),
    reason     text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO read_model_generation (required, reason)
VALUES (1, 'the read models as first released');

ALTER TABLE read_model_versions ADD COLUMN generation int NOT NULL DEFAULT 1;

-- Raises the required generation by one; returns it.
CREATE FUNCTION herald_read_model_changed(why text) RETURNS int
LANGUAGE sql AS $$
    UPDATE read_model_generation
       SET required = required + 1, reason = why, changed_at = now()
    RETURNING required
$$;
