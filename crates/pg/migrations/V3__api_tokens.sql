-- API tokens. Only the SHA-256 hash of a token is stored; token_id is the
-- short, public part of the token that names it in lists and logs.
-- The key is a uuid so a secondary site can create tokens through its
-- buffer while main is unreachable. scopes is a jsonb array of
-- read:observations, write:observations and admin.
CREATE TABLE api_token (
    id uuid PRIMARY KEY,
    token_id text NOT NULL UNIQUE CHECK (token_id ~ '^[a-z0-9]{8}$'),
    token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    name text NOT NULL CHECK (name <> ''),
    scopes jsonb NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    -- The site whose API or CLI created the token.
    created_site text
);
