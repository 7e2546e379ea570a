-- Dashboard sessions, kept server-side (noticeflow/web/auth.py): the signed session cookie holds
-- only the random session id; the user, role and lifetime live here, so signing out, `noticeflow
-- users disable` and `users remove` end a session at once, and a copied cookie replayed after
-- that gets nothing. A session lasts 12 hours from sign-in, however active it is.
CREATE TABLE web_sessions (
    sid           text PRIMARY KEY,                 -- 32 random bytes, URL-safe base64
    user_name     text NOT NULL,                    -- a local account or an OpenID Connect user
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'approver')),
    via           text NOT NULL CHECK (via IN ('password', 'oidc')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
-- Revoking a user's sessions (disable, remove) and telling whether a name is an OIDC user's.
CREATE INDEX web_sessions_user ON web_sessions (user_name, via);
