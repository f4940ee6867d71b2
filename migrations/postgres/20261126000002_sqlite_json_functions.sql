-- The SQLite functions wfmd's statements use that PostgreSQL lacks, so one statement
-- text serves both backends. The JSON ones work over text that holds JSON: a set-based write binds its rows as one JSON
-- array and reads them back with `json_each`, and a few lists are matched the same way.
-- Like SQLite's, they return a string member unquoted, any other member as JSON text, and
-- NULL for a JSON null. Unlike SQLite's, they always return text: a statement that reads
-- a number casts it (`CAST(json_extract(value, '$[1]') AS BIGINT)`, a no-op on SQLite).

-- The elements of a JSON array, in order: `key` is the index, `value` the element.
CREATE FUNCTION json_each(document TEXT) RETURNS TABLE (key BIGINT, value TEXT)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT e.ordinality - 1, e.element #>> '{}'
    FROM jsonb_array_elements(document::jsonb) WITH ORDINALITY AS e(element, ordinality)
    ORDER BY e.ordinality
$$;

-- The member at a SQLite JSON path: `$`, `$.name`, `$[0]`, and chains of them.
CREATE FUNCTION json_extract(document TEXT, path TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT document::jsonb #>> CASE
        WHEN path = '$' THEN '{}'::TEXT[]
        ELSE string_to_array(
            ltrim(regexp_replace(substr(path, 2), '\[(\d+)\]', '.\1', 'g'), '.'), '.')
    END
$$;

-- The values of a group as a JSON array (`[]` for none), in the order they come.
CREATE FUNCTION json_group_array_step(state JSONB, element ANYELEMENT) RETURNS JSONB
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT state || jsonb_build_array(element)
$$;

CREATE FUNCTION json_group_array_text(state JSONB) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT state::TEXT
$$;

CREATE AGGREGATE json_group_array(ANYELEMENT) (
    SFUNC = json_group_array_step,
    STYPE = JSONB,
    FINALFUNC = json_group_array_text,
    INITCOND = '[]'
);

-- The non-null values of a group joined by `separator` (NULL for none), in the order
-- they come, as SQLite's two-argument group_concat.
CREATE FUNCTION group_concat_step(state TEXT, value TEXT, separator TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN state
                WHEN state IS NULL THEN value
                ELSE state || separator || value END
$$;

CREATE AGGREGATE group_concat(TEXT, TEXT) (
    SFUNC = group_concat_step,
    STYPE = TEXT
);
