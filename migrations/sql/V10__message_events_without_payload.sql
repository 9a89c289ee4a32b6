-- The read side stops copying the event store: `message_events` keeps what queries filter
-- on and show, and the timeline reads each event's payload from `events`, where it is
-- stored once. Recipients and content (inside the payload) no longer reach the read side.
--
-- Dropping a column rewrites nothing: existing rows keep their bytes on disk until they are
-- next rewritten (or their chunk is dropped), and new rows no longer carry them. A
-- projector still running the previous release would insert into the dropped column and
-- fail its batches (retried, never lost) until it is replaced: the deployment replaces the
-- projector before the new one starts, as for every read-model change.
ALTER TABLE message_events DROP COLUMN payload;
