-- Local dashboard accounts (`noticeflow users add`). Passwords are argon2id hashes; a name is an
-- ops person's user name (it appears as `by` in events, as the CLI's --by does).
CREATE TABLE web_users (
    name           text PRIMARY KEY,
    role           text NOT NULL CHECK (role IN ('viewer', 'operator', 'approver')),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    disabled       boolean NOT NULL DEFAULT false
);
