-- json_each and json_extract as PostgreSQL can inline them into the statements that call
-- them: without STRICT (which a SQL function's body must match to be inlined; both
-- still return nothing for a NULL argument, as before). Called, rather than inlined,
-- each was planned again in every statement that used it, the greater part of the
-- time of a change's record; inlined, a constant path is resolved once, when the
-- statement is prepared.

CREATE OR REPLACE FUNCTION json_each(document TEXT) RETURNS TABLE (key BIGINT, value TEXT)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT e.ordinality - 1, e.element #>> '{}'
    FROM jsonb_array_elements(document::jsonb) WITH ORDINALITY AS e(element, ordinality)
    ORDER BY e.ordinality
$$;

CREATE OR REPLACE FUNCTION json_extract(document TEXT, path TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT document::jsonb #>> CASE
        WHEN path = '$' THEN '{}'::TEXT[]
        ELSE string_to_array(
            ltrim(regexp_replace(substr(path, 2), '\[(\d+)\]', '.\1', 'g'), '.'), '.')
    END
$$;
