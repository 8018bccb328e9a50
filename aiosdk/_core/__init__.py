"""The core every service builds on: transport, retries, errors, configuration, paging."""
