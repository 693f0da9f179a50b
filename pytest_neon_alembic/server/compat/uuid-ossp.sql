-- uuid-ossp 1.1's functions in SQL. Differences from the C extension: the node of
-- uuid_generate_v1() is random (with the multicast bit set, as v1mc's), not the
-- machine's MAC address.
CREATE FUNCTION @extschema@.uuid_nil() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT '00000000-0000-0000-0000-000000000000'::uuid $$;
CREATE FUNCTION @extschema@.uuid_ns_dns() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION @extschema@.uuid_ns_url() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT '6ba7b811-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION @extschema@.uuid_ns_oid() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT '6ba7b812-9dad-11d1-80b4-00c04fd430c8'::uuid $$;
CREATE FUNCTION @extschema@.uuid_ns_x500() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT '6ba7b814-9dad-11d1-80b4-00c04fd430c8'::uuid $$;

-- Version and variant bits set on a 16-byte hash or random value.
CREATE FUNCTION @extschema@.pytest_neon_alembic_uuid(raw bytea, version int) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(
        set_byte(set_byte(substring(raw FROM 1 FOR 16), 6,
                          (get_byte(raw, 6) & 15) | (version << 4)),
                 8, (get_byte(raw, 8) & 63) | 128),
        'hex')::uuid
$$;

-- Time-based: 100 ns intervals since 1582-10-15, a random clock sequence and node.
CREATE FUNCTION @extschema@.uuid_generate_v1mc() RETURNS uuid LANGUAGE plpgsql VOLATILE STRICT
PARALLEL SAFE AS $fn$
DECLARE
    ts bigint := (extract(epoch FROM clock_timestamp()) * 10000000)::bigint + 122192928000000000;
    rnd bytea := uuid_send(gen_random_uuid());
BEGIN
    RETURN encode(
        substring(int8send(ts & 4294967295) FROM 5)
        || substring(int8send((ts >> 32) & 65535) FROM 7)
        || substring(int8send(((ts >> 48) & 4095) | 4096) FROM 7)
        || set_byte(substring(rnd FROM 1 FOR 2), 0, (get_byte(rnd, 0) & 63) | 128)
        || set_byte(substring(rnd FROM 11 FOR 6), 0, get_byte(rnd, 10) | 1),
        'hex')::uuid;
END
$fn$;
CREATE FUNCTION @extschema@.uuid_generate_v1() RETURNS uuid LANGUAGE sql VOLATILE STRICT
PARALLEL SAFE AS $$ SELECT @extschema@.uuid_generate_v1mc() $$;

CREATE FUNCTION @extschema@.uuid_generate_v3(namespace uuid, name text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT @extschema@.pytest_neon_alembic_uuid(
        decode(md5(uuid_send(namespace) || convert_to(name, getdatabaseencoding())), 'hex'), 3)
$$;
CREATE FUNCTION @extschema@.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE STRICT
PARALLEL SAFE AS $$ SELECT pg_catalog.gen_random_uuid() $$;
CREATE FUNCTION @extschema@.uuid_generate_v5(namespace uuid, name text) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT @extschema@.pytest_neon_alembic_uuid(@extschema@.pytest_neon_alembic_sha1(
        uuid_send(namespace) || convert_to(name, getdatabaseencoding())), 5)
$$;
