-- The shared query set of tests/differential.rs: each query runs on cohortdb and
-- on PostgreSQL over tables made by setup.sql; result column names, type OIDs
-- and text values (or the SQLSTATE of an error) must be the same. A query
-- marked `-- known: why` is a documented difference: the test checks that it
-- still differs, so the mark goes when the difference does.

-- Literals and their types
SELECT 1;
SELECT 1, 2 AS two, 'x', 'x' AS named;
SELECT 2147483648;
-- known: decimal literals are double precision (DataFusion reads them as floats); numeric in PostgreSQL
SELECT 1.5;
-- known: decimal literals are double precision; numeric in PostgreSQL
SELECT 1e3;
SELECT true, false, NULL;
-- known: varchar is stored and sent as text
SELECT 'text'::text, 'v'::varchar;
SELECT 42::bigint, 42::smallint, 42::int;
SELECT 2.5::float8, 2.5::real, 2.5::double precision;
SELECT DATE '2026-01-31', TIMESTAMP '2026-01-31 12:30:00';
SELECT 12.345::numeric(10,2);
SELECT CAST(3 AS text);
SELECT decode('0102', 'hex');
SELECT '\x0102'::bytea, 'a\\b\001'::bytea;

-- Operators and functions
SELECT 7 / 2, 7 % 3, -7 / 2;
-- known: decimal literals are double precision, so the quotient is too
SELECT 7.0 / 2;
SELECT 2 ^ 10;
SELECT 'a' || 'b', 'a' || 1;
SELECT upper('abc'), lower('ABC'), length('héllo'), substr('abcdef', 2, 3);
SELECT coalesce(NULL, 3), nullif(1, 1), greatest(1, 5, 3), least(4, 2);
-- known: decimal literals are double precision, so round/floor/ceil/sqrt of them are too
SELECT abs(-3), round(2.567, 2), floor(2.5), ceil(2.1), sqrt(16.0);
SELECT CASE WHEN 1 > 2 THEN 'a' ELSE 'b' END;
SELECT 1 = 1, 1 < 2, 'a' LIKE 'a%', 'abc' ~ 'b';
SELECT position('c' IN 'abcd'), replace('aXbX', 'X', '-'), trim('  x  ');
SELECT split_part('a,b,c', ',', 2), left('abcdef', 2), right('abcdef', 2);
SELECT date_trunc('month', TIMESTAMP '2026-03-15 10:00:00');
-- known: extract returns integer; numeric in PostgreSQL
SELECT extract(year FROM DATE '2026-03-15');
SELECT DATE '2026-03-15' + 1;
SELECT TIMESTAMP '2026-03-15 10:00:00' + INTERVAL '1 day';
-- known: to_char takes chrono patterns (%Y-%m-%d), not PostgreSQL's templates
SELECT to_char(TIMESTAMP '2026-03-15 10:00:00', 'YYYY-MM-DD');
SELECT md5('cohortdb');
SELECT ARRAY[1, 2, 3], ARRAY['a', 'b'];
-- known: array_length returns bigint
SELECT array_length(ARRAY[1, 2, 3], 1);

-- Tables
SELECT * FROM users ORDER BY user_id;
SELECT user_id, city FROM users WHERE age > 30 ORDER BY user_id;
SELECT city, count(*) FROM users GROUP BY city ORDER BY city NULLS LAST;
SELECT count(*), count(city), count(DISTINCT city) FROM users;
-- known: avg of integers is double precision; numeric in PostgreSQL
SELECT min(age), max(age), sum(age), avg(age) FROM users;
-- known: sum of bigint is bigint (an overflow is an error); numeric in PostgreSQL
SELECT sum(user_id) FROM users;
-- known: avg of numeric has scale + 4 digits; PostgreSQL gives at least 16
SELECT sum(spend), avg(spend), max(spend) FROM users;
SELECT sum(amount), avg(amount), min(amount) FROM events;
SELECT vip, count(*) FROM users GROUP BY vip ORDER BY vip NULLS FIRST;
SELECT u.city, count(e.user_id) AS events FROM users u LEFT JOIN events e ON e.user_id = u.user_id GROUP BY u.city ORDER BY u.city;
SELECT user_id, kind, row_number() OVER (PARTITION BY user_id ORDER BY ts) FROM events ORDER BY user_id, ts;
SELECT user_id, sum(amount) OVER (ORDER BY ts) AS running FROM events WHERE amount IS NOT NULL ORDER BY ts;
SELECT user_id FROM users WHERE user_id IN (SELECT user_id FROM events WHERE kind = 'purchase') ORDER BY 1;
SELECT user_id FROM users u WHERE EXISTS (SELECT 1 FROM events e WHERE e.user_id = u.user_id AND e.amount > 50);
WITH buyers AS (SELECT DISTINCT user_id FROM events WHERE kind = 'purchase') SELECT count(*) FROM buyers;
SELECT city FROM users WHERE city IS NOT NULL UNION SELECT 'paris' ORDER BY 1;
SELECT user_id, seen FROM users WHERE seen >= '2026-01-02' ORDER BY user_id;
SELECT signup, signup + 30 FROM users WHERE signup IS NOT NULL ORDER BY 1;
SELECT date_trunc('month', ts) AS month, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT kind, string_agg(user_id::text, ',' ORDER BY user_id) FROM events GROUP BY kind ORDER BY kind;
SELECT user_id, spend * 2 FROM users ORDER BY user_id;
SELECT user_id, age::float8 / 3 FROM users WHERE age IS NOT NULL ORDER BY user_id;
SELECT user_id, amount::numeric(10,1) FROM events WHERE amount IS NOT NULL ORDER BY amount;
SELECT * FROM users ORDER BY user_id LIMIT 2 OFFSET 1;
SELECT count(*) FILTER (WHERE kind = 'purchase') FROM events;
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY age) FROM users;
-- known: stddev and variance are double precision; numeric in PostgreSQL
SELECT stddev(age), variance(age) FROM users;
-- known: generate_series yields bigint
SELECT user_id FROM generate_series(1, 3) AS g(user_id);

-- Catalog and session
-- known: current_schema() is text; name in PostgreSQL
SELECT current_schema();
SELECT version() LIKE 'PostgreSQL %';
SHOW server_encoding;
SHOW client_encoding;
SELECT current_setting('DateStyle');
SELECT relname, relkind FROM pg_catalog.pg_class WHERE relname IN ('users', 'events') ORDER BY relname;
SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass AND attnum > 0 ORDER BY attnum;
SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_name = 'events' ORDER BY ordinal_position;
SELECT typname FROM pg_type WHERE oid = 20;
SELECT nspname FROM pg_namespace WHERE nspname IN ('pg_catalog', 'public') ORDER BY 1;

-- Errors (the SQLSTATE is compared)
SELECT * FROM missing_table;
SELECT missing_column FROM users;
SELECT 1 / 0;
SELECT 'abc'::int;
SELECT no_such_function(1);
SELEC 1;
INSERT INTO events VALUES (NULL, 'view', NULL, '2026-01-01');
SET no_such_setting = 1;

-- Sizes as psql's \dt+ and \l+ print them
SELECT pg_size_pretty(0::bigint), pg_size_pretty(10239::bigint), pg_size_pretty(10240::bigint), pg_size_pretty(-10240::bigint);
SELECT pg_size_pretty(20971519::bigint), pg_size_pretty(20971520::bigint), pg_size_pretty(1073741823::bigint), pg_size_pretty(1099511627776::bigint);
SELECT pg_size_pretty(9223372036854775807::bigint), pg_size_pretty(-9223372036854775807::bigint), pg_size_pretty(123456789012345::bigint);

-- ARRAY(subquery)
SELECT ARRAY(SELECT city FROM users WHERE user_id < 3 ORDER BY 1);
SELECT ARRAY(SELECT city FROM users WHERE user_id > 100);
SELECT user_id, ARRAY(SELECT kind FROM events e WHERE e.user_id = u.user_id AND e.kind = 'click') FROM users u WHERE user_id IN (4, 5) ORDER BY 1;
