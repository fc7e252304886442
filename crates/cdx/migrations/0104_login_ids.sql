-- A recent login is keyed by the session it opened (the `session_id` of
-- `auth.login.succeeded`), the key auth's facts name it by, so that `metatron cdx rebuild`
-- and the event consumer count each login once.
ALTER TABLE tenant_logins RENAME COLUMN event_id TO login_id;
