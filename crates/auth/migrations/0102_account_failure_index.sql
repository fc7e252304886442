-- The throttle reads an account's latest success and the failures after it; with the
-- outcome in the index both are seeks, however many logins the account has.
DROP INDEX login_attempts_by_account;
CREATE INDEX login_attempts_by_account ON login_attempts (account_key, succeeded, at);
