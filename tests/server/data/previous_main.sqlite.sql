PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE tokens (
	id VARCHAR(32) NOT NULL, 
	label VARCHAR(100) NOT NULL, 
	secret_hash VARCHAR(64) NOT NULL, 
	owner VARCHAR(100) NOT NULL, 
	is_admin BOOLEAN NOT NULL, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME, 
	revoked_at DATETIME, 
	last_used_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (secret_hash)
);
INSERT INTO tokens VALUES('2cce561b6ce4429199c2eff49f0bfb1f','admin','059209df661e940e4aad57978c1b679839ec10dcebcdcb40fa8909dbb6f54432','admin',1,'2026-12-01 12:33:34.501161',NULL,NULL,NULL);
CREATE TABLE idempotency_keys (
	id INTEGER NOT NULL, 
	principal VARCHAR(100) NOT NULL, 
	"key" VARCHAR(255) NOT NULL, 
	method VARCHAR(10) NOT NULL, 
	path VARCHAR(64) NOT NULL, 
	fingerprint VARCHAR(64) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	status_code INTEGER, 
	response_headers JSON, 
	response_body BLOB, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_idempotency_principal_key UNIQUE (principal, "key")
);
CREATE INDEX ix_tokens_owner ON tokens (owner);
CREATE INDEX ix_tokens_created_at ON tokens (created_at);
CREATE INDEX ix_idempotency_keys_created_at ON idempotency_keys (created_at);
COMMIT;
