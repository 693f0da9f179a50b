"""Where branches come from: ``base.Backend`` (the protocol), ``local`` (databases on one
PostgreSQL server, embedded or given) and ``neon`` (branches through the Neon API)."""
