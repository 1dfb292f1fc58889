-- Accounts an operator disabled (`imctl admin user disable`): no login, no token (issue 13).
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
