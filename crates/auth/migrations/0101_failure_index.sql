-- The per-IP throttle counts only failures; leading the index with the outcome keeps that
-- count independent of how many successful logins came from the same address (a busy
-- office, a proxy, a login storm).
DROP INDEX login_attempts_by_ip;
CREATE INDEX login_attempts_failures_by_ip ON login_attempts (ip, succeeded, at);
