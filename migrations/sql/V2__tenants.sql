-- Tenants and their API keys. Keys are random 256-bit-class secrets, so a fast hash
-- (SHA-256) is the right tool: there is nothing to brute-force that a slow hash would
-- protect, and every request looks one up. Only the hash is stored; the key is shown once.

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_hash   bytea       PRIMARY KEY CHECK (length(key_hash) = 32),
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The first characters of the key, to tell keys apart in listings without the secret.
    key_prefix text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
