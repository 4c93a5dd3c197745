-- The gateway's own database: its sessions, and the audit log of admin actions.

-- A session is what a login opens, a refresh continues and a logout ends. Access tokens name
-- it, and pass only while it is open. Only a hash of the current refresh secret is kept.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    username     text NOT NULL,
    refresh_hash text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Pushed on by each refresh.
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    -- logout, reused (a replaced refresh token came back), removed (the user is gone).
    end_reason   text
);

CREATE INDEX sessions_forgettable ON sessions (coalesce(ended_at, expires_at));

-- Every admin action that reached the gateway, allowed or refused. Only ever appended to.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    who        text NOT NULL,
    role       text NOT NULL,
    method     text NOT NULL,
    path       text NOT NULL,
    status     smallint NOT NULL,
    request_id text NOT NULL,
    address    text NOT NULL
);
